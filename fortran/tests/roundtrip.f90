!> Round trips between Fortran ranks and a Python checker (fortran/tests/checker.py) through
!> mpistage servers. Run by tests/test_fortran.py:
!>   MPMD:    mpiexec -n 2 mpistage-server : -n 2 roundtrip mpmd : -n 1 python checker.py mpmd 2
!>   connect: roundtrip put, then checker.py connect 2, then roundtrip get (three client jobs)
!> The program never calls MPI_Init or MPI_Finalize itself (as SmartRedis programs do not):
!> initialize starts MPI and the exit handler finalizes it, which says goodbye to the servers.
module roundtrip_support
  use, intrinsic :: iso_fortran_env, only : int8, int16, int32, int64, real32, real64
  use, intrinsic :: iso_c_binding, only : c_bool
  use mpistage
  implicit none
  integer, parameter :: D1 = 3, D2 = 4, D3 = 5, D4 = 2
  integer :: failures = 0, checks = 0
  character(len=8) :: who = ''
contains
  subroutine expect_true(cond, what)
    logical, intent(in) :: cond
    character(len=*), intent(in) :: what
    checks = checks + 1
    if (.not. cond) then
      failures = failures + 1
      print '(a)', trim(who) // ' FAIL: ' // what
    end if
  end subroutine

  subroutine expect_ok(code, what)
    integer, intent(in) :: code
    character(len=*), intent(in) :: what
    checks = checks + 1
    if (code /= SRNoError) then
      failures = failures + 1
      print '(a,i0,a)', trim(who) // ' FAIL: ' // what // ' returned ', code, ': ' // get_last_error()
    end if
  end subroutine

  !> code must be `expected` and the last error must mention `mention`.
  subroutine expect_error(code, expected, mention, what)
    integer, intent(in) :: code, expected
    character(len=*), intent(in) :: mention, what
    checks = checks + 1
    if (code /= expected .or. index(get_last_error(), mention) == 0) then
      failures = failures + 1
      print '(a,i0,a,i0,a)', trim(who) // ' FAIL: ' // what // ' returned ', code, ' (expected ', expected, &
           '), message "' // get_last_error() // '"'
    else
      print '(a)', trim(who) // ' error as expected: ' // what // ': ' // get_last_error()
    end if
  end subroutine

  include 'generated/typed_roundtrip.inc'

  !> The dataset each Fortran rank puts (checked by checker.py).
  subroutine put_fortran_dataset(client, r)
    type(client_type), intent(inout) :: client
    integer, intent(in) :: r
    type(dataset_type) :: ds
    real(real64) :: u(3, 4)
    integer(int32) :: n(5)
    integer :: i, j
    character(len=16) :: name
    write (name, '(a,i0)') 'fds', r
    do j = 1, 4
      do i = 1, 3
        u(i, j) = i + 10 * j + 0.5_real64 + r
      end do
    end do
    n = [(i * 2 + r, i = 1, 5)]
    call expect_ok(ds%initialize(name), 'dataset initialize')
    call expect_ok(ds%add_tensor('u', u, shape(u)), 'dataset add_tensor u')
    call expect_ok(ds%add_tensor('n', n, shape(n)), 'dataset add_tensor n')
    call expect_ok(ds%add_meta_scalar('dt', 0.5_real64), 'add_meta_scalar dt')
    call expect_ok(ds%add_meta_scalar('dt', 0.25_real64), 'add_meta_scalar dt 2')
    call expect_ok(ds%add_meta_scalar('step', int(7 + r, int64)), 'add_meta_scalar step')
    call expect_ok(ds%add_meta_string('names', 'alpha'), 'add_meta_string')
    call expect_ok(ds%add_meta_string('names', 'beta   '), 'add_meta_string 2')
    call expect_error(ds%add_meta_scalar('dt', 1_int32), SRTypeError, 'float64', 'add_meta_scalar of another type')
    call expect_ok(client%put_dataset(ds), 'put_dataset')
    call expect_ok(client%append_to_list('flist', ds), 'append_to_list')
  end subroutine

  !> The dataset checker.py puts: tensor w float32 (2,3) in C order, scalars n=[42] (int64),
  !> f=[1.5] (float64), strings s=["x", "yz"].
  subroutine check_python_dataset(client)
    type(client_type), intent(inout) :: client
    type(dataset_type) :: ds
    real(real32) :: w(2, 3)
    integer(int64), pointer :: n(:) => null()
    real(real64), pointer :: f(:) => null()
    character(len=:), allocatable :: s(:), names(:)
    integer :: i, j, length
    logical :: ok
    call expect_ok(client%get_dataset('pds', ds), 'get_dataset pds')
    call expect_true(ds%get_name() == 'pds', 'dataset name')
    call expect_ok(ds%unpack_dataset_tensor('w', w, [2, 3]), 'unpack_dataset_tensor w')
    ok = .true.
    do j = 1, 3
      do i = 1, 2
        ok = ok .and. w(i, j) == real(10 * i + j, real32)
      end do
    end do
    call expect_true(ok, 'values of dataset tensor w')
    call expect_ok(ds%get_meta_scalars('n', n), 'get_meta_scalars n')
    if (associated(n)) call expect_true(size(n) == 1 .and. n(1) == 42, 'meta scalars n')
    call expect_ok(ds%get_meta_scalars('f', f), 'get_meta_scalars f')
    if (associated(f)) call expect_true(size(f) == 1 .and. f(1) == 1.5_real64, 'meta scalars f')
    call expect_ok(ds%get_meta_strings('s', s), 'get_meta_strings s')
    if (allocated(s)) call expect_true(size(s) == 2 .and. s(1) == 'x' .and. s(2) == 'yz', 'meta strings s')
    call expect_ok(ds%get_tensor_names(names), 'get_tensor_names')
    if (allocated(names)) call expect_true(size(names) == 1 .and. names(1) == 'w', 'tensor names')
    call expect_error(ds%unpack_dataset_tensor('nope', w, [2, 3]), SRKeyError, 'nope', 'missing dataset tensor')
    call expect_error(ds%get_meta_scalars('f', n), SRTypeError, 'float64', 'meta scalars of another type')
    call expect_ok(client%get_list_length('plist', length), 'get_list_length plist')
    call expect_true(length == 1, 'length of plist')
  end subroutine

  !> Missing keys, wrong shapes and types give a non-zero status and a message.
  subroutine check_errors(client, r)
    type(client_type), intent(inout) :: client
    integer, intent(in) :: r
    real(real64) :: a(3, 4), b(4, 3)
    real(real32) :: c(3, 4)
    type(dataset_type) :: ds
    logical :: exists
    logical(c_bool) :: cexists
    integer :: length
    character(len=16) :: key
    write (key, '(a,i0,a)') 'f', r, '.r8.2'
    call expect_error(client%unpack_tensor('no_such_key', a, shape(a)), SRKeyError, 'no_such_key', &
         'unpack_tensor of a missing key')
    call expect_error(client%unpack_tensor(key, b, shape(b)), SRParameterError, 'shape', 'unpack with wrong dims')
    call expect_error(client%unpack_tensor(key, c, shape(c)), SRTypeError, 'float64', 'unpack into wrong type')
    call expect_ok(client%delete_tensor('no_such_key'), 'delete of a missing key is no error (as SmartRedis)')
    call expect_error(client%get_dataset('no_such_dataset', ds), SRKeyError, 'no_such_dataset', 'missing dataset')
    call expect_error(client%put_tensor('k', a, [5, 5]), SRParameterError, 'dims', 'put with wrong dims')
    call expect_error(client%put_tensor('', a, shape(a)), SRParameterError, 'empty', 'put with an empty key')
    ! the connection still works after errors
    call expect_ok(client%unpack_tensor(key, a, shape(a)), 'unpack after errors')
    ! exists / poll, with default logical and logical(c_bool)
    call expect_ok(client%tensor_exists(key, exists), 'tensor_exists')
    call expect_true(exists, 'tensor_exists of ' // trim(key))
    call expect_ok(client%tensor_exists('no_such_key', cexists), 'tensor_exists c_bool')
    call expect_true(.not. logical(cexists), 'tensor_exists of a missing key')
    call expect_ok(client%key_exists(key, exists), 'key_exists')
    call expect_true(exists, 'key_exists')
    call expect_ok(client%poll_tensor('no_such_key', 10, 3, exists), 'poll_tensor')
    call expect_true(.not. exists, 'poll_tensor of a missing key')
    call expect_ok(client%poll_key(key, 10, 3, cexists), 'poll_key')
    call expect_true(logical(cexists), 'poll_key')
    call expect_ok(client%get_list_length('no_such_list', length), 'get_list_length of a missing list')
    call expect_true(length == 0, 'missing list has length 0')
  end subroutine

  !> copy / rename / delete, on one shard and across shards ({tags} pick the shard).
  subroutine check_moves(client, r)
    type(client_type), intent(inout) :: client
    integer, intent(in) :: r
    real(real64) :: a(3, 4), e(3, 4)
    logical :: exists
    character(len=32) :: src, dst1, dst2
    integer :: i, j
    write (src, '(a,i0,a)') 'f', r, '.r8.2'
    do j = 1, 4
      do i = 1, 3
        e(i, j) = real(i + 10*j + 100 + 1000 + 3*r, real64) + 0.25_real64
      end do
    end do
    write (dst1, '(a,i0)') 'copy.a.', r
    write (dst2, '(a,i0)') 'copy.b.', r
    call expect_ok(client%copy_tensor(src, dst1), 'copy_tensor')
    a = 0
    call expect_ok(client%unpack_tensor(dst1, a, shape(a)), 'unpack copy')
    call expect_true(all(a == e), 'values of the copy')
    call expect_ok(client%rename_tensor(dst1, dst2), 'rename_tensor')
    call expect_ok(client%tensor_exists(dst1, exists), 'exists after rename')
    call expect_true(.not. exists, 'renamed key is gone')
    a = 0
    call expect_ok(client%unpack_tensor(dst2, a, shape(a)), 'unpack renamed')
    call expect_true(all(a == e), 'values of the renamed tensor')
    call expect_ok(client%delete_tensor(dst2), 'delete_tensor')
    call expect_ok(client%tensor_exists(dst2, exists), 'exists after delete')
    call expect_true(.not. exists, 'deleted key is gone')
  end subroutine
end module roundtrip_support

program roundtrip
  use mpi_f08
  use roundtrip_support
  implicit none
  type(client_type) :: client
  type(MPI_Comm) :: comm
  character(len=16) :: mode
  integer :: r, nranks, length
  logical :: ok

  call get_command_argument(1, mode)
  call expect_ok(client%initialize('roundtrip'), 'initialize')
  if (failures > 0) then
    print '(a)', 'initialize failed: ' // get_last_error()
    error stop 1
  end if
  comm = mpistage_comm()
  call MPI_Comm_rank(comm, r)
  call MPI_Comm_size(comm, nranks)
  write (who, '(a,i0)') 'F', r

  select case (trim(mode))
  case ('mpmd')
    ! the checker is the last rank of the application communicator
    call put_all(client, r, 'f' // itoa(r))
    call put_fortran_dataset(client, r)
    call MPI_Barrier(comm)   ! 1: the checker reads what Fortran put, then puts its own
    call MPI_Barrier(comm)   ! 2: Fortran reads what Python put
    call check_all(client, 50, 'p')
    call check_all(client, 60, 'pf')
    call check_python_dataset(client)
    call check_errors(client, r)
    call check_moves(client, r)
    call expect_ok(client%poll_list_length('flist', nranks - 1, 10, 100, ok), 'poll_list_length')
    call expect_true(ok, 'flist holds one dataset per Fortran rank')
  case ('put')
    call put_all(client, r, 'f' // itoa(r))
    call put_fortran_dataset(client, r)
  case ('get')
    call check_all(client, r, 'f' // itoa(r))
    call check_all(client, 50, 'p')
    call check_all(client, 60, 'pf')
    call check_python_dataset(client)
    call check_errors(client, r)
    call check_moves(client, r)
    call expect_ok(client%get_list_length('flist', length), 'get_list_length flist')
    call expect_true(length == nranks, 'flist holds one dataset per Fortran rank')
  case default
    print '(a)', 'usage: roundtrip mpmd|put|get'
    error stop 2
  end select

  print '(a,i0,a,i0,a)', trim(who) // ' ' // trim(mode) // ': ', checks, ' checks, ', failures, ' failures'
  if (failures > 0) call MPI_Abort(MPI_COMM_WORLD, 3)

contains
  function itoa(i) result(s)
    integer, intent(in) :: i
    character(len=:), allocatable :: s
    character(len=12) :: buf
    write (buf, '(i0)') i
    s = trim(buf)
  end function
end program roundtrip
