!> The Fortran client's part of the staging benchmark (driven by scaling/bench_fortran.py):
!> put_tensor and unpack_tensor of int8 arrays of 8 B .. 16 MiB, timed with MPI_Wtime, the same
!> sizes and iteration counts as scaling/bench_staging.py. Writes one line per operation and
!> size to OUT: "op label bytes t1 t2 ..." (seconds). Run in MPMD mode:
!>   mpiexec -n 1 mpistage-server : -n 1 ./bench_fortran_client OUT [quick]
program bench_fortran_client
  use, intrinsic :: iso_fortran_env, only : int8, real64
  use mpi_f08
  use mpistage
  implicit none
  character(len=8), parameter :: labels(6) = [character(len=8) :: '8B', '4KiB', '48KiB', '602KiB', '4MiB', '16MiB']
  integer, parameter :: sizes(6) = [8, 4096, 49152, 224 * 224 * 3 * 4, 4194304, 16777216]
  type(client_type) :: client
  type(MPI_Comm) :: comm
  integer(int8), allocatable :: data(:), out(:)
  real(real64), allocatable :: times(:)
  character(len=512) :: path, arg
  character(len=32) :: key
  logical :: quick
  integer :: s, k, i, op, u, rank, n, code
  real(real64) :: t0

  call get_command_argument(1, path)
  call get_command_argument(2, arg)
  quick = trim(arg) == 'quick'
  if (client%initialize('bench') /= SRNoError) call die('initialize')
  comm = mpistage_comm()
  call MPI_Comm_rank(comm, rank)
  if (rank == 0) open (newunit=u, file=trim(path), status='replace', action='write')
  do s = 1, size(sizes)
    n = sizes(s)
    allocate(data(n), out(n))
    data = 1_int8
    write (key, '(a,i0,a,a)') 'bench.', rank, '.', trim(labels(s))
    if (client%put_tensor(key, data, [n]) /= SRNoError) call die('put')
    k = iterations(n)
    allocate(times(k))
    do op = 1, 2
      call MPI_Barrier(comm)
      do i = 1, k + 3
        t0 = MPI_Wtime()
        if (op == 1) then
          code = client%put_tensor(key, data, [n])
        else
          code = client%unpack_tensor(key, out, [n])
        end if
        if (i > 3) times(i - 3) = MPI_Wtime() - t0
        if (code /= SRNoError) call die('benchmark call')
      end do
      if (rank == 0) write (u, '(a,1x,a,1x,i0,*(1x,es12.5))') trim(merge('put   ', 'unpack', op == 1)), &
           trim(labels(s)), n, times
    end do
    if (any(out /= data)) call die('unpacked bytes differ')
    deallocate(data, out, times)
  end do
  if (rank == 0) close (u)

contains
  integer function iterations(nbytes)
    integer, intent(in) :: nbytes
    if (nbytes <= 4096) then
      iterations = 2000
    else if (nbytes <= 65536) then
      iterations = 400
    else if (nbytes <= 1048576) then
      iterations = 60
    else
      iterations = 15
    end if
    if (quick) iterations = max(5, iterations / 4)
  end function

  subroutine die(what)
    character(len=*), intent(in) :: what
    print '(a)', 'bench_fortran_client: ' // what // ' failed: ' // get_last_error()
    call MPI_Abort(MPI_COMM_WORLD, 1)
  end subroutine
end program bench_fortran_client
