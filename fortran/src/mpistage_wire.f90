!> Bytes of the mpistage wire protocol (docs/protocol.md): message building, reply parsing,
!> tensor descriptors, key routing (CRC16 hash slots) and the C <-> Fortran element reorder.
!> No MPI here. All integers on the wire are little-endian; this module assumes a
!> little-endian host (checked by mpistage_link at initialization).
module mpistage_wire
  use, intrinsic :: iso_fortran_env, only : int8, int16, int32, int64, real32, real64
  use, intrinsic :: iso_c_binding, only : c_ptr, c_f_pointer, c_associated
  implicit none
  private

  ! op codes, status codes, kinds, dtype codes, tags, flags, limits, session-setup values
  include 'generated/wire_constants.inc'

  !> A request being built: 32 header bytes (filled by msg_finish), then length-prefixed fields.
  type, public :: msg_t
    integer(int8), allocatable :: b(:)
    integer(int64) :: n = 0
    integer :: nfields = 0
  end type msg_t

  !> A parsed reply (or any header + fields buffer).
  type, public :: reply_t
    integer :: status = -1
    integer :: seq = 0
    integer :: flags = 0
    integer :: nfields = 0
    integer(int64) :: payload_bytes = 0
    integer(int8), allocatable :: b(:)
    integer(int64), allocatable :: off(:), flen(:)
  end type reply_t

  !> A tensor descriptor.
  type, public :: desc_t
    integer :: dtype = 0
    integer :: order = ORDER_C
    integer :: ndim = 0
    integer(int64), allocatable :: shape(:)
  end type desc_t

  public :: msg_init, msg_add, msg_add_str, msg_add_u8, msg_add_u32, msg_add_u64, &
       msg_finish, parse_reply, field_bytes, field_str, field_len, field_u8, field_i64, &
       desc_pack, desc_unpack, desc_nbytes, dtype_size, dtype_name, crc16, hash_slot, shard_of, &
       put_u32, put_u64, get_u32, get_u64, str_bytes, bytes_str, reorder_c_to_f, &
       int_str, host_is_little_endian

contains

  ! ------------------------------------------------------------------ little helpers
  logical function host_is_little_endian()
    integer(int8) :: b(4)
    b = transfer(1_int32, b)
    host_is_little_endian = b(1) == 1
  end function

  function int_str(i) result(s)
    integer(int64), intent(in) :: i
    character(len=:), allocatable :: s
    character(len=24) :: buf
    write (buf, '(i0)') i
    s = trim(buf)
  end function

  pure function str_bytes(s) result(b)
    character(len=*), intent(in) :: s
    integer(int8) :: b(len(s))
    integer :: i
    do i = 1, len(s)
      b(i) = int(ichar(s(i:i)) - merge(256, 0, ichar(s(i:i)) > 127), int8)
    end do
  end function

  pure function bytes_str(b) result(s)
    integer(int8), intent(in) :: b(:)
    character(len=size(b)) :: s
    integer :: i
    do i = 1, size(b)
      s(i:i) = achar(iand(int(b(i)), 255))
    end do
  end function

  pure function put_u32(v) result(b)
    integer(int64), intent(in) :: v
    integer(int8) :: b(4)
    b = transfer(int(v, int32), b)
  end function

  pure function put_u64(v) result(b)
    integer(int64), intent(in) :: v
    integer(int8) :: b(8)
    b = transfer(v, b)
  end function

  !> unsigned 32-bit at b(pos..pos+3), as int64
  pure integer(int64) function get_u32(b, pos)
    integer(int8), intent(in) :: b(:)
    integer(int64), intent(in) :: pos
    get_u32 = iand(int(transfer(b(pos:pos+3), 0_int32), int64), int(z'FFFFFFFF', int64))
  end function

  pure integer(int64) function get_u64(b, pos)
    integer(int8), intent(in) :: b(:)
    integer(int64), intent(in) :: pos
    get_u64 = transfer(b(pos:pos+7), 0_int64)
  end function

  ! ------------------------------------------------------------------ requests
  subroutine msg_init(m)
    type(msg_t), intent(out) :: m
    allocate(m%b(512))
    m%b = 0
    m%n = HEADER_BYTES
    m%nfields = 0
  end subroutine

  subroutine reserve(m, extra)
    type(msg_t), intent(inout) :: m
    integer(int64), intent(in) :: extra
    integer(int8), allocatable :: t(:)
    integer(int64) :: cap
    if (m%n + extra <= size(m%b, kind=int64)) return
    cap = max(2 * size(m%b, kind=int64), m%n + extra)
    allocate(t(cap))
    t(1:m%n) = m%b(1:m%n)
    call move_alloc(t, m%b)
  end subroutine

  !> Append one field: u32 length, then the bytes.
  subroutine msg_add(m, bytes)
    type(msg_t), intent(inout) :: m
    integer(int8), intent(in) :: bytes(:)
    integer(int64) :: k
    k = size(bytes, kind=int64)
    call reserve(m, k + 4)
    m%b(m%n+1:m%n+4) = put_u32(k)
    m%b(m%n+5:m%n+4+k) = bytes
    m%n = m%n + 4 + k
    m%nfields = m%nfields + 1
  end subroutine

  subroutine msg_add_str(m, s)
    type(msg_t), intent(inout) :: m
    character(len=*), intent(in) :: s
    call msg_add(m, str_bytes(s))
  end subroutine

  subroutine msg_add_u8(m, v)
    type(msg_t), intent(inout) :: m
    integer, intent(in) :: v
    call msg_add(m, [int(v, int8)])
  end subroutine

  subroutine msg_add_u32(m, v)
    type(msg_t), intent(inout) :: m
    integer(int64), intent(in) :: v
    call msg_add(m, put_u32(v))
  end subroutine

  !> Append an 8-byte field: a u64, or an i64 (the same little-endian two's-complement bytes).
  subroutine msg_add_u64(m, v)
    type(msg_t), intent(inout) :: m
    integer(int64), intent(in) :: v
    call msg_add(m, put_u64(v))
  end subroutine

  !> Fill the 32-byte request header.
  subroutine msg_finish(m, op, seq, payload_bytes, flags)
    type(msg_t), intent(inout) :: m
    integer, intent(in) :: op, seq, flags
    integer(int64), intent(in) :: payload_bytes
    m%b(1:4) = str_bytes(REQUEST_MAGIC)
    m%b(5:6) = transfer(int(PROTOCOL_VERSION, int16), m%b(5:6))
    m%b(7:8) = transfer(int(op, int16), m%b(7:8))
    m%b(9:12) = put_u32(int(seq, int64))
    m%b(13:16) = put_u32(int(flags, int64))
    m%b(17:20) = put_u32(int(m%nfields, int64))
    m%b(21:24) = 0
    m%b(25:32) = put_u64(payload_bytes)
  end subroutine

  ! ------------------------------------------------------------------ replies
  !> Parse a reply buffer (moved into r%b). Returns an error text, empty when fine.
  subroutine parse_reply(buf, r, err)
    integer(int8), allocatable, intent(inout) :: buf(:)
    type(reply_t), intent(out) :: r
    character(len=:), allocatable, intent(out) :: err
    integer(int64) :: pos, n, k, nf
    integer :: i
    err = ''
    call move_alloc(buf, r%b)
    n = size(r%b, kind=int64)
    if (n < HEADER_BYTES) then
      err = 'reply shorter than its 32-byte header'
      return
    end if
    if (bytes_str(r%b(1:4)) /= REPLY_MAGIC) then
      err = 'reply has a bad magic'
      return
    end if
    r%status = int(iand(int(transfer(r%b(7:8), 0_int16), int32), 65535))
    r%seq = int(get_u32(r%b, 9_int64))
    r%flags = int(get_u32(r%b, 13_int64))
    nf = get_u32(r%b, 17_int64)
    r%payload_bytes = get_u64(r%b, 25_int64)
    if (nf > MAX_FIELDS) then
      err = 'reply has too many fields'
      return
    end if
    r%nfields = int(nf)
    allocate(r%off(r%nfields), r%flen(r%nfields))
    pos = HEADER_BYTES + 1
    do i = 1, r%nfields
      if (pos + 3 > n) then
        err = 'reply field length runs past the end'
        return
      end if
      k = get_u32(r%b, pos)
      pos = pos + 4
      if (pos + k - 1 > n) then
        err = 'reply field runs past the end'
        return
      end if
      r%off(i) = pos
      r%flen(i) = k
      pos = pos + k
    end do
    if (pos /= n + 1) err = 'trailing bytes after the last reply field'
  end subroutine

  integer(int64) function field_len(r, i)
    type(reply_t), intent(in) :: r
    integer, intent(in) :: i
    field_len = r%flen(i)
  end function

  function field_bytes(r, i) result(b)
    type(reply_t), intent(in) :: r
    integer, intent(in) :: i
    integer(int8), allocatable :: b(:)
    b = r%b(r%off(i):r%off(i) + r%flen(i) - 1)
  end function

  function field_str(r, i) result(s)
    type(reply_t), intent(in) :: r
    integer, intent(in) :: i
    character(len=:), allocatable :: s
    s = bytes_str(r%b(r%off(i):r%off(i) + r%flen(i) - 1))
  end function

  integer function field_u8(r, i)
    type(reply_t), intent(in) :: r
    integer, intent(in) :: i
    field_u8 = -1
    if (r%flen(i) >= 1) field_u8 = iand(int(r%b(r%off(i))), 255)
  end function

  integer(int64) function field_i64(r, i)
    type(reply_t), intent(in) :: r
    integer, intent(in) :: i
    field_i64 = -1
    if (r%flen(i) == 8) field_i64 = get_u64(r%b, r%off(i))
  end function

  ! ------------------------------------------------------------------ descriptors
  include 'generated/wire_dtypes.inc'

  function desc_pack(d) result(b)
    type(desc_t), intent(in) :: d
    integer(int8), allocatable :: b(:)
    integer :: i
    allocate(b(4 + 8 * d%ndim))
    b(1) = int(d%dtype, int8)
    b(2) = int(d%order, int8)
    b(3:4) = transfer(int(d%ndim, int16), b(3:4))
    do i = 1, d%ndim
      b(5 + 8*(i-1):12 + 8*(i-1)) = put_u64(d%shape(i))
    end do
  end function

  !> Decode a descriptor field; ok is false when it is malformed.
  subroutine desc_unpack(b, d, ok)
    integer(int8), intent(in) :: b(:)
    type(desc_t), intent(out) :: d
    logical, intent(out) :: ok
    integer :: i
    ok = .false.
    if (size(b) < 4) return
    d%dtype = iand(int(b(1)), 255)
    d%order = iand(int(b(2)), 255)
    d%ndim = iand(int(transfer(b(3:4), 0_int16), int32), 65535)
    if (size(b) /= 4 + 8 * d%ndim .or. dtype_size(d%dtype) == 0) return
    allocate(d%shape(d%ndim))
    do i = 1, d%ndim
      d%shape(i) = get_u64(b, int(5 + 8*(i-1), int64))
    end do
    ok = .true.
  end subroutine

  integer(int64) function desc_nbytes(d)
    type(desc_t), intent(in) :: d
    desc_nbytes = dtype_size(d%dtype) * product(d%shape)
  end function

  ! ------------------------------------------------------------------ routing
  !> CRC-16/XMODEM (polynomial 0x1021, initial 0), bitwise.
  integer function crc16(b)
    integer(int8), intent(in) :: b(:)
    integer :: i, j, crc
    crc = 0
    do i = 1, size(b)
      crc = ieor(crc, ishft(iand(int(b(i)), 255), 8))
      do j = 1, 8
        if (iand(crc, 32768) /= 0) then
          crc = iand(ieor(ishft(crc, 1), 4129), 65535)
        else
          crc = iand(ishft(crc, 1), 65535)
        end if
      end do
    end do
    crc16 = crc
  end function

  !> Hash slot of a key: only the bytes between the first '{' and the first '}' after it
  !> count, when there is at least one byte between them.
  integer function hash_slot(key)
    character(len=*), intent(in) :: key
    integer :: s, e
    s = index(key, '{')
    if (s > 0) then
      e = index(key(s+1:), '}')
      if (e > 1) then
        hash_slot = mod(crc16(str_bytes(key(s+1:s+e-1))), HASH_SLOTS)
        return
      end if
    end if
    hash_slot = mod(crc16(str_bytes(key)), HASH_SLOTS)
  end function

  !> Shard (0-based) that owns a key.
  integer function shard_of(key, nshards)
    character(len=*), intent(in) :: key
    integer, intent(in) :: nshards
    shard_of = int(int(hash_slot(key), int64) * nshards / HASH_SLOTS)
  end function

  ! ------------------------------------------------------------------ layout
  !> Copy elements of `esize` bytes from C (row-major) order in `src` to Fortran (column-major)
  !> order in `dst`; `shape` is in index order, so element (i1..in) of both is the same.
  subroutine reorder_c_to_f(src, dst, shape, esize)
    integer(int8), intent(in) :: src(0:)
    integer(int8), intent(inout) :: dst(0:)
    integer(int64), intent(in) :: shape(:)
    integer, intent(in) :: esize
    integer(int64) :: cstride(size(shape)), idx(size(shape)), k, n, coff, e
    integer :: nd, d
    nd = size(shape)
    n = product(shape)
    if (n == 0) return
    if (nd <= 1) then
      dst(0:n*esize-1) = src(0:n*esize-1)
      return
    end if
    cstride(nd) = 1
    do d = nd - 1, 1, -1
      cstride(d) = cstride(d+1) * shape(d+1)
    end do
    idx = 0
    coff = 0
    e = esize
    do k = 0, n - 1
      dst(k*e:k*e+e-1) = src(coff*e:coff*e+e-1)
      ! advance the Fortran multi-index (first index fastest)
      do d = 1, nd
        idx(d) = idx(d) + 1
        coff = coff + cstride(d)
        if (idx(d) < shape(d)) exit
        coff = coff - cstride(d) * shape(d)
        idx(d) = 0
      end do
    end do
  end subroutine

end module mpistage_wire
