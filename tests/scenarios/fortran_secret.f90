!> tests/test_hardening_access.py: a Fortran client connects through MPISTAGE_ADDRESS; with the
!> argument "refused" it expects the servers to refuse it (a connection file with a wrong secret)
!> and prints the error, otherwise it writes and reads a tensor back.
program fortran_secret
  use, intrinsic :: iso_fortran_env, only : real64
  use mpistage, only : client_type, get_last_error, SRNoError
  implicit none
  type(client_type) :: client
  real(real64) :: a(3), b(3)
  character(len=16) :: mode
  integer :: code

  call get_command_argument(1, mode)
  code = client%initialize('fortran_secret')
  if (trim(mode) == 'refused') then
    if (code == SRNoError) error stop 'connected with a wrong secret'
    print '(a)', 'FORTRAN REFUSED ' // get_last_error()
    stop
  end if
  if (code /= SRNoError) error stop 'initialize failed'
  a = [1d0, 2d0, 3d0]
  if (client%put_tensor('fortran_secret', a, shape(a)) /= SRNoError) error stop 'put_tensor failed'
  if (client%unpack_tensor('fortran_secret', b, shape(b)) /= SRNoError) error stop 'unpack_tensor failed'
  if (any(a /= b)) error stop 'wrong values'
  print '(a)', 'FORTRAN OK'
end program fortran_secret
