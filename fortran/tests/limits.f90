!> The Fortran client's limits (tests/test_limits.py), one rank against one shard (MPMD):
!> a request whose header is over MAX_HEADER_BYTES (a dataset with a 1.1 MB metadata string)
!> fails in the client with an error naming the limit, and is never sent; the link goes on.
!> Payload parts travel in messages of at most $MPISTAGE_MESSAGE_BYTES (the test sets it small,
!> as a stand-in for MPI's 2^31-1 count limit): a tensor and a dataset's tensors go both ways
!> in several messages and come back exact.
program limits
  use, intrinsic :: iso_fortran_env, only : real64, int32
  use mpistage
  implicit none
  integer, parameter :: N = 300000  ! 2.4 MB of real64
  type(client_type) :: client
  type(dataset_type) :: big, ds, back
  real(real64), allocatable :: a(:), b(:)
  integer(int32) :: m(1000, 7), m2(1000, 7)
  integer :: code, i, failures
  character(len=:), allocatable :: err

  failures = 0
  if (client%initialize('limits') /= SRNoError) error stop 'initialize failed'

  if (big%initialize('big_header') /= SRNoError) error stop 'dataset initialize failed'
  if (big%add_meta_string('blob', repeat('x', 1100000)) /= SRNoError) error stop 'add_meta_string failed'
  code = client%put_dataset(big)
  err = get_last_error()
  print '(a,i0,a)', 'LIMITS header code=', code, ' error=' // err
  if (code /= SRParameterError .or. index(err, 'more than the limit 1048576') == 0) call fail('header refusal')

  allocate(a(N), b(N))
  a = [(real(i, real64) * 0.5_real64, i = 1, N)]
  if (client%put_tensor('limits.a', a, shape(a)) /= SRNoError) call fail('put_tensor after the refusal')
  b = 0
  if (client%unpack_tensor('limits.a', b, shape(b)) /= SRNoError) call fail('unpack_tensor')
  if (any(a /= b)) call fail('tensor values')

  m = reshape([(i, i = 1, size(m))], shape(m))
  if (ds%initialize('limits_ds') /= SRNoError) error stop 'dataset initialize failed'
  if (ds%add_tensor('a', a, shape(a)) /= SRNoError) call fail('add_tensor a')
  if (ds%add_tensor('m', m, shape(m)) /= SRNoError) call fail('add_tensor m')
  if (client%put_dataset(ds) /= SRNoError) call fail('put_dataset')
  if (client%get_dataset('limits_ds', back) /= SRNoError) call fail('get_dataset')
  b = 0
  m2 = 0
  if (back%unpack_dataset_tensor('a', b, shape(b)) /= SRNoError) call fail('unpack_dataset_tensor a')
  if (back%unpack_dataset_tensor('m', m2, shape(m2)) /= SRNoError) call fail('unpack_dataset_tensor m')
  if (any(a /= b) .or. any(m /= m2)) call fail('dataset values')
  print '(a,i0,a)', 'LIMITS done: ', failures, ' failures'

contains

  subroutine fail(what)
    character(len=*), intent(in) :: what
    failures = failures + 1
    print '(a)', 'LIMITS FAIL: ' // what // ': ' // get_last_error()
  end subroutine

end program limits
