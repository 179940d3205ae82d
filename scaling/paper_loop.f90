!> The paper's synthetic benchmark loop (Partee et al., Listing 1) as a Fortran client program,
!> the twin of scaling/paper_loop.py (same keys, calls, timing and CSV records). Built and run by
!> scaling/sweep.py --client fortran; by hand (flags from mpistage-config --fflags/--flibs):
!>   mpiexec -n 1 mpistage-server : -n 2 ./paper_loop WORKLOAD ITERATIONS TOTAL SETUP BATCH OUTDIR
!> WORKLOAD: resnet (224x224x3 image, pre_process_3ch, ResNet-50, 1x1000 out) or eke (3000x4
!> features, the EKE preprocessing, EKEResNet, 3000x1 out). TOTAL < 0: every rank runs ITERATIONS
!> (weak scaling); else TOTAL iterations are shared by the ranks (strong). SETUP: a directory of
!> exported models (python -m inference.export) from which rank 0 stores model and script before
!> the barrier, or '-'. Each rank writes OUTDIR/rank<r>.csv: rank,iteration,call,seconds.
program paper_loop
  use, intrinsic :: iso_fortran_env, only : real32, real64
  use mpi_f08
  use mpistage
  implicit none
  character(len=*), parameter :: model_name = 'paper_model', script_name = 'paper_script'
  character(len=*), parameter :: eke_means = 'paper_eke_means', eke_stds = 'paper_eke_stds'
  character(len=9), parameter :: calls(5) = [character(len=9) :: 'put', 'script', 'model', 'unpack', 'iteration']
  type(client_type) :: client
  type(MPI_Comm) :: comm
  character(len=512) :: workload, setup, outdir, arg
  character(len=128) :: in_key, script_out_key, out_key
  character(len=128), allocatable :: inputs(:)
  real(real32), allocatable :: image(:, :, :), features(:, :), result(:, :)
  real(real64), allocatable :: t(:, :)
  real(real64) :: t0, t1, t2, t3, t4
  integer :: iterations, total, batch, rank, nranks, mine, i, c, u

  call get_command_argument(1, workload)
  call get_command_argument(2, arg); read (arg, *) iterations
  call get_command_argument(3, arg); read (arg, *) total
  call get_command_argument(4, setup)
  call get_command_argument(5, arg); read (arg, *) batch
  call get_command_argument(6, outdir)
  if (len_trim(outdir) == 0) call die('usage: paper_loop WORKLOAD ITERATIONS TOTAL SETUP BATCH OUTDIR')
  if (workload /= 'resnet' .and. workload /= 'eke') call die('WORKLOAD must be resnet or eke')

  if (client%initialize('paper_loop') /= SRNoError) call die('initialize')
  comm = mpistage_comm()
  call MPI_Comm_rank(comm, rank)
  call MPI_Comm_size(comm, nranks)
  mine = iterations
  if (total >= 0) mine = total / nranks + merge(1, 0, rank < mod(total, nranks))

  if (workload == 'resnet') then
    allocate(image(224, 224, 3), result(1, 1000))
    call random_number(image)
    inputs = [character(len=128) :: '']
  else
    allocate(features(3000, 4), result(3000, 1))
    call random_number(features)
    features(:, 1) = features(:, 1) + 1e-3
    features(:, 3) = features(:, 3) + 1e-3
    features(:, 2) = features(:, 2) - 0.5
    inputs = [character(len=128) :: '', eke_means, eke_stds]
  end if
  if (rank == 0 .and. setup /= '-') call store_setup()
  call MPI_Barrier(comm)   ! the only synchronization: every rank starts together

  allocate(t(5, mine))
  do i = 1, mine
    write (in_key, '(a,i0,a,i0)') 'resnet_input_rank_', rank, '_', i - 1
    write (script_out_key, '(a,i0,a,i0)') 'resnet_processed_input_rank_', rank, '_', i - 1
    write (out_key, '(a,i0,a,i0)') 'resnet_output_rank_', rank, '_', i - 1
    inputs(1) = in_key
    t0 = MPI_Wtime()
    if (workload == 'resnet') then
      call check(client%put_tensor(trim(in_key), image, shape(image)), 'put_tensor')
      t1 = MPI_Wtime()
      call check(client%run_script(script_name, 'pre_process_3ch', inputs, [script_out_key]), 'run_script')
    else
      call check(client%put_tensor(trim(in_key), features, shape(features)), 'put_tensor')
      t1 = MPI_Wtime()
      call check(client%run_script(script_name, 'preprocess', inputs, [script_out_key]), 'run_script')
    end if
    t2 = MPI_Wtime()
    call check(client%run_model(model_name, [script_out_key], [out_key]), 'run_model')
    t3 = MPI_Wtime()
    call check(client%unpack_tensor(trim(out_key), result, shape(result)), 'unpack_tensor')
    t4 = MPI_Wtime()
    t(:, i) = [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0]
  end do
  if (mine > 0) then
    if (any(result /= result)) call die('the model''s output is not finite')
  end if

  write (arg, '(a,a,i0,a)') trim(outdir), '/rank', rank, '.csv'
  open (newunit=u, file=trim(arg), status='replace', action='write')
  write (u, '(a)') 'rank,iteration,call,seconds'
  do i = 1, mine
    do c = 1, 5
      write (u, '(i0,a,i0,a,a,a,f0.9)') rank, ',', i - 1, ',', trim(calls(c)), ',', t(c, i)
    end do
  end do
  close (u)
  call MPI_Barrier(comm)

contains
  !> Store the workload's model (with the batch size) and script, as the paper's driver did.
  subroutine store_setup()
    character(len=:), allocatable :: dir
    dir = trim(setup) // '/'
    if (workload == 'resnet') then
      call check(client%set_model_from_file(model_name, dir // 'resnet50.pt', 'TORCH', 'CPU', batch_size=batch), &
                 'set_model_from_file')
      call check(client%set_script_from_file(script_name, 'CPU', dir // 'pre_process_3ch.txt'), 'set_script_from_file')
    else
      call check(client%set_model_from_file(model_name, dir // 'eke_resnet.pt', 'TORCH', 'CPU', batch_size=batch), &
                 'set_model_from_file')
      call check(client%set_script_from_file(script_name, 'CPU', dir // 'eke_preprocess.txt'), 'set_script_from_file')
      call check(client%put_tensor(eke_means, [0.0, 0.0, 0.0, 0.0], [4]), 'put_tensor means')
      call check(client%put_tensor(eke_stds, [1.0, 1.0, 1.0, 1.0], [4]), 'put_tensor stds')
    end if
  end subroutine

  subroutine check(code, what)
    integer(enum_kind), intent(in) :: code
    character(len=*), intent(in) :: what
    if (code /= SRNoError) call die(what)
  end subroutine

  subroutine die(what)
    character(len=*), intent(in) :: what
    logical :: started
    call MPI_Initialized(started)
    if (.not. started) error stop 'paper_loop: ' // what
    print '(a)', 'paper_loop: ' // what // ' failed: ' // get_last_error()
    call MPI_Abort(MPI_COMM_WORLD, 1)
  end subroutine
end program paper_loop
