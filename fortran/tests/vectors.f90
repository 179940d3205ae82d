!> The test vectors of docs/protocol_vectors.json against mpistage_wire (no MPI, no servers).
!> tests/test_fortran.py turns the JSON file into lines on standard input, one vector a line
!> (hex: bytes; '-': an empty field):
!>   route KEYHEX CRC16HEX|- SLOT COUNT NSHARDS SHARD ...   hash slot and shard of a key
!>   request CODE SEQ FLAGS PAYLOAD NFIELDS FIELDHEX... HEX  msg_add + msg_finish give HEX
!>   reply CODE SEQ FLAGS PAYLOAD NFIELDS FIELDHEX... HEX    parse_reply of HEX gives the rest
!>   desc DTYPE ORDER NDIM DIM... HEX                        desc_pack gives HEX, desc_unpack back
!> and prints "vectors: N checked, F failures".
program vectors
  use, intrinsic :: iso_fortran_env, only : int8, int64, input_unit
  use mpistage_wire
  implicit none
  type :: int8_list
    integer(int8), allocatable :: b(:)
  end type
  character(len=65536) :: line
  character(len=:), allocatable :: what
  integer :: ios, pos, checked = 0, failures = 0

  do
    read (input_unit, '(a)', iostat=ios) line
    if (ios /= 0) exit
    if (len_trim(line) == 0) cycle
    pos = 1
    what = token(line, pos)
    select case (what)
    case ('route'); call route(line, pos)
    case ('request'); call message(line, pos, .true.)
    case ('reply'); call message(line, pos, .false.)
    case ('desc'); call descriptor(line, pos)
    case default
      call fail('unknown vector kind ' // what)
    end select
    checked = checked + 1
  end do
  print '(a,i0,a,i0,a)', 'vectors: ', checked, ' checked, ', failures, ' failures'
  if (failures > 0) error stop 1

contains

  subroutine fail(text)
    character(len=*), intent(in) :: text
    failures = failures + 1
    print '(a)', 'vectors FAIL: ' // text
  end subroutine

  !> The next blank-separated word of line from pos on ('' at the end).
  function token(line, pos) result(t)
    character(len=*), intent(in) :: line
    integer, intent(inout) :: pos
    character(len=:), allocatable :: t
    integer :: e
    do while (pos <= len(line))
      if (line(pos:pos) /= ' ') exit
      pos = pos + 1
    end do
    e = pos
    do while (e <= len(line))
      if (line(e:e) == ' ') exit
      e = e + 1
    end do
    t = line(pos:e-1)
    pos = e
  end function

  integer(int64) function int_token(line, pos) result(v)
    character(len=*), intent(in) :: line
    integer, intent(inout) :: pos
    character(len=:), allocatable :: t
    t = token(line, pos)
    read (t, *) v
  end function

  !> Bytes of a hex word; '-' is no bytes.
  function hex_token(line, pos) result(b)
    character(len=*), intent(in) :: line
    integer, intent(inout) :: pos
    integer(int8), allocatable :: b(:)
    character(len=:), allocatable :: t
    integer :: i, v
    t = token(line, pos)
    if (t == '-') t = ''
    allocate(b(len(t) / 2))
    do i = 1, size(b)
      read (t(2*i-1:2*i), '(z2)') v
      b(i) = int(v - merge(256, 0, v > 127), int8)
    end do
  end function

  function hex(b) result(t)
    integer(int8), intent(in) :: b(:)
    character(len=2 * size(b)) :: t
    integer :: i
    do i = 1, size(b)
      write (t(2*i-1:2*i), '(z2.2)') iand(int(b(i)), 255)
    end do
  end function

  subroutine route(line, pos)
    character(len=*), intent(in) :: line
    integer, intent(inout) :: pos
    character(len=:), allocatable :: key, crc
    integer :: i, crc_value, n, nshards, expected
    integer(int64) :: slot
    key = bytes_str(hex_token(line, pos))
    crc = token(line, pos)
    slot = int_token(line, pos)
    if (crc /= '-') then
      read (crc, '(z4)') crc_value
      if (crc16(str_bytes(key)) /= crc_value) call fail('crc16 of ' // key)
    end if
    if (hash_slot(key) /= slot) call fail('hash slot of ' // key)
    n = int(int_token(line, pos))
    do i = 1, n
      nshards = int(int_token(line, pos))
      expected = int(int_token(line, pos))
      if (shard_of(key, nshards) /= expected) &
           call fail('shard of ' // key // ' among ' // int_str(int(nshards, int64)))
    end do
  end subroutine

  !> A request is packed and compared; a reply is parsed and its parts compared.
  subroutine message(line, pos, is_request)
    character(len=*), intent(in) :: line
    integer, intent(inout) :: pos
    logical, intent(in) :: is_request
    integer :: code, seq, flags, nfields, i
    integer(int64) :: payload
    type(msg_t) :: m
    type(reply_t) :: r
    type(int8_list), allocatable :: fields(:)
    integer(int8), allocatable :: want(:)
    character(len=:), allocatable :: err
    code = int(int_token(line, pos))
    seq = int(int_token(line, pos))
    flags = int(int_token(line, pos))
    payload = int_token(line, pos)
    nfields = int(int_token(line, pos))
    allocate(fields(nfields))
    do i = 1, nfields
      fields(i)%b = hex_token(line, pos)
    end do
    want = hex_token(line, pos)
    if (is_request) then
      call msg_init(m)
      do i = 1, nfields
        call msg_add(m, fields(i)%b)
      end do
      call msg_finish(m, code, seq, payload, flags)
      if (hex(m%b(1:m%n)) /= hex(want)) call fail('request bytes ' // hex(m%b(1:m%n)) // ' /= ' // hex(want))
      return
    end if
    call parse_reply(want, r, err)
    if (len(err) > 0) then
      call fail('parse_reply: ' // err)
      return
    end if
    if (r%status /= code .or. r%seq /= seq .or. r%flags /= flags .or. r%payload_bytes /= payload &
         .or. r%nfields /= nfields) then
      call fail('reply header parts')
      return
    end if
    do i = 1, nfields
      if (hex(field_bytes(r, i)) /= hex(fields(i)%b)) call fail('reply field ' // int_str(int(i, int64)))
    end do
  end subroutine

  subroutine descriptor(line, pos)
    character(len=*), intent(in) :: line
    integer, intent(inout) :: pos
    type(desc_t) :: d, back
    integer(int8), allocatable :: want(:)
    integer :: i
    logical :: ok
    d%dtype = int(int_token(line, pos))
    d%order = int(int_token(line, pos))
    d%ndim = int(int_token(line, pos))
    allocate(d%shape(d%ndim))
    do i = 1, d%ndim
      d%shape(i) = int_token(line, pos)
    end do
    want = hex_token(line, pos)
    if (hex(desc_pack(d)) /= hex(want)) call fail('descriptor bytes ' // hex(desc_pack(d)) // ' /= ' // hex(want))
    call desc_unpack(want, back, ok)
    if (.not. ok) then
      call fail('desc_unpack of ' // hex(want))
    else if (back%dtype /= d%dtype .or. back%order /= d%order .or. back%ndim /= d%ndim) then
      call fail('desc_unpack parts of ' // hex(want))
    else if (any(back%shape /= d%shape)) then
      call fail('desc_unpack shape of ' // hex(want))
    end if
  end subroutine

end program vectors
