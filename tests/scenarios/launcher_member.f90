!> A Fortran ensemble member: connects with client%initialize (MPISTAGE_ADDRESS and SSKEYOUT come
!> from the launcher), writes its parameter (first argument) as the tensor "value" under its prefix.
program launcher_member
  use, intrinsic :: iso_fortran_env, only : real64
  use mpi_f08
  use mpistage, only : client_type, get_last_error, SRNoError
  implicit none
  type(client_type) :: client
  real(real64) :: value(1)
  character(len=64) :: arg
  integer :: rank

  call MPI_Init()
  call MPI_Comm_rank(MPI_COMM_WORLD, rank)
  call get_command_argument(1, arg)
  read (arg, *) value(1)
  if (client%initialize('launcher_member') /= SRNoError) error stop 'initialize failed'
  if (rank == 0) then
    if (client%put_tensor('value', value, shape(value)) /= SRNoError) error stop 'put_tensor failed'
    print '(a,f6.2)', 'fortran member wrote ', value(1)
  end if
  call MPI_Barrier(MPI_COMM_WORLD)
  call MPI_Finalize()
end program launcher_member
