!> mpistage "hello" for Fortran: a 2-D domain decomposition whose blocks go through a
!> TorchScript script on the mpistage servers and come back.
!>
!>   make                                                  # uses mpistage-config
!>   mpiexec -n 1 mpistage-server : -n 4 ./hello smooth.py
!>
!> The application uses MPI as it always did, with one change for MPMD jobs: its communicator
!> is mpistage_comm() instead of MPI_COMM_WORLD (which also holds the server ranks).
program hello
  use, intrinsic :: iso_fortran_env, only : real64
  use mpi_f08
  use mpistage, only : client_type, mpistage_comm, get_last_error, SRNoError
  implicit none
  integer, parameter :: NX = 16, NY = 12          ! one block: NX x NY points
  type(client_type) :: client
  type(MPI_Comm) :: comm, cart
  integer :: nranks, rank, dims(2), coords(2), left, right, i, j, gi, gj
  real(real64) :: u(0:NX+1, NY), field(NX, NY), result(NX, NY), expected(NX, NY), err
  character(len=256) :: script
  character(len=32) :: key_in, key_out

  call MPI_Init()
  comm = mpistage_comm()                          ! <- the one line: was MPI_COMM_WORLD
  call MPI_Comm_size(comm, nranks)
  dims = 0
  call MPI_Dims_create(nranks, 2, dims)
  call MPI_Cart_create(comm, 2, dims, [.false., .false.], .true., cart)
  call MPI_Comm_rank(cart, rank)
  call MPI_Cart_coords(cart, rank, 2, coords)

  ! this block of the global field: f(gi, gj) = gi + gj / 100
  do j = 1, NY
    do i = 1, NX
      gi = coords(1) * NX + i
      gj = coords(2) * NY + j
      u(i, j) = gi + gj / 100.0_real64
    end do
  end do
  ! a halo exchange along the first dimension, on the application's communicator
  call MPI_Cart_shift(cart, 0, 1, left, right)
  call MPI_Sendrecv(u(NX, :), NY, MPI_DOUBLE_PRECISION, right, 1, u(0, :), NY, MPI_DOUBLE_PRECISION, &
       left, 1, cart, MPI_STATUS_IGNORE)
  call MPI_Sendrecv(u(1, :), NY, MPI_DOUBLE_PRECISION, left, 2, u(NX+1, :), NY, MPI_DOUBLE_PRECISION, &
       right, 2, cart, MPI_STATUS_IGNORE)
  if (left /= MPI_PROC_NULL) call check(abs(u(0, 1) - (u(1, 1) - 1)) < 1e-12_real64, 'halo from the left')
  field = u(1:NX, :)

  call check(client%initialize('fortran_hello') == SRNoError, 'initialize')
  if (rank == 0) then
    script = 'smooth.py'
    if (command_argument_count() >= 1) call get_command_argument(1, script)
    call check(client%set_script_from_file('smooth', 'CPU', trim(script)) == SRNoError, 'set_script_from_file')
  end if
  call MPI_Barrier(cart)

  ! {hash tags} keep a block's input and output on one shard
  write (key_in, '(a,i0,a)') '{block', rank, '}.u'
  write (key_out, '(a,i0,a)') '{block', rank, '}.smoothed'
  call check(client%put_tensor(key_in, field, shape(field)) == SRNoError, 'put_tensor')
  call check(client%run_script('smooth', 'smooth', [key_in], [key_out]) == SRNoError, 'run_script')
  call check(client%unpack_tensor(key_out, result, shape(result)) == SRNoError, 'unpack_tensor')

  ! the same computation in Fortran: torch's dim 1 is Fortran's second index
  expected = 0.5_real64 * field + spread(sum(field, dim=2) / NY, 2, NY)
  err = maxval(abs(result - expected))
  call MPI_Allreduce(MPI_IN_PLACE, err, 1, MPI_DOUBLE_PRECISION, MPI_MAX, cart)
  call check(err < 1e-12_real64, 'result matches the Fortran computation')
  if (rank == 0) print '(a,i0,a,i0,a,i0,a,es9.2)', 'fortran_hello: ', nranks, ' blocks (', dims(1), ' x ', &
       dims(2), ') smoothed on the servers, max error ', err

  call MPI_Finalize()                             ! also says goodbye to the servers

contains
  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(len=*), intent(in) :: what
    if (.not. ok) then
      print '(a)', 'fortran_hello FAILED: ' // what // ': ' // get_last_error()
      call MPI_Abort(MPI_COMM_WORLD, 1)
    end if
  end subroutine
end program hello
