!> ocean: a 1.5-layer reduced-gravity shallow-water double gyre (examples/ocean/README.md).
!>
!>   mpiexec -n 4 ./ocean run.nml
!>
!> Standalone it runs on MPI_COMM_WORLD. With closure = ml or stream = .true. it is a client of
!> the mpistage servers (ocean_coupling) and runs on their application communicator: the world
!> without the server ranks in an MPMD job (mpiexec -n S mpistage-server : -n N ./ocean run.nml),
!> MPI_COMM_WORLD in connect mode (mpistage run --dir D -n N -- ./ocean run.nml).
!> Every model day it checks for blow-up and appends a line to diag_file; state files every
!> output_interval days; restart_out and features_file at the end.
program ocean
  use, intrinsic :: iso_fortran_env, only : output_unit, error_unit
  use mpi_f08
  use ocean_config, only : dp, config_t, read_config, CLOSURE_MEKE, CLOSURE_ML
  use ocean_grid, only : grid_t, grid_init
  use ocean_dynamics, only : dynamics_t, state_t, dynamics_init, cold_start, rk3_step
  use ocean_closure, only : closure_t, closure_init, meke_step
  use ocean_features, only : compute_features, NUM_FEATURES
  use ocean_io, only : write_state, read_state, write_features
  use ocean_diagnostics, only : diag_t, diagnose, diag_header, diag_line, healthy
  use ocean_coupling, only : coupling_t, coupling_comm, coupling_init, put_snapshot, request_eke, receive_eke
  implicit none
  type(config_t) :: cfg
  type(grid_t) :: g
  type(dynamics_t) :: dyn
  type(state_t) :: s
  type(closure_t) :: clo
  type(diag_t) :: dg
  type(coupling_t) :: cp
  type(MPI_Comm) :: comm
  logical :: coupled
  character(len=512) :: nml, path
  real(dp) :: day0, wall0, wall, cpu0, cpu
  real(dp), allocatable :: feat(:, :, :)
  integer :: day, n, diag_unit

  if (command_argument_count() /= 1) then
    write (error_unit, '(a)') 'usage: ocean NAMELIST'
    error stop 2
  end if
  call get_command_argument(1, nml)
  call read_config(trim(nml), cfg)
  call MPI_Init()
  coupled = cfg%closure == CLOSURE_ML .or. cfg%stream
  comm = MPI_COMM_WORLD
  if (coupled) comm = coupling_comm()
  call grid_init(g, cfg, comm)
  if (coupled) call coupling_init(cp, g, cfg)
  call dynamics_init(g, cfg, dyn, s)
  call closure_init(g, cfg, clo)
  day0 = 0
  if (len_trim(cfg%restart_in) > 0) then
    call read_state(g, trim(cfg%restart_in), s, clo, day0)
  else
    call cold_start(g, cfg, s)
  end if
  if (g%rank == 0 .and. len_trim(cfg%diag_file) > 0) then
    open (newunit=diag_unit, file=trim(cfg%diag_file), status='replace', action='write')
    write (diag_unit, '(a)') trim(diag_header())
  end if
  if (cfg%output_interval > 0) call write_state(g, snapshot_path(nint(day0)), s, clo, day0)

  wall0 = MPI_Wtime()
  call cpu_time(cpu0)
  do day = nint(day0) + 1, nint(day0) + cfg%days
    do n = 1, cfg%steps_per_day
      ! closure = ml: the network runs on the servers while the first step of the day is taken
      if (cfg%closure == CLOSURE_ML .and. n == 1 .and. mod(day - 1, cfg%coupling_interval) == 0) &
           call request_eke(cp, g, cfg, s)
      call rk3_step(g, cfg, dyn, s, clo%kappa)
      if (cfg%closure == CLOSURE_MEKE) call meke_step(g, cfg, clo, s)
      if (cfg%closure == CLOSURE_ML) call receive_eke(cp, g, cfg, clo)
    end do
    call diagnose(g, s, clo, dg)
    if (g%rank == 0 .and. len_trim(cfg%diag_file) > 0) write (diag_unit, '(a)') trim(diag_line(real(day, dp), dg))
    if (.not. healthy(cfg, dg)) then
      if (g%rank == 0) write (error_unit, '(a,i0,a)') 'ocean: blow-up on model day ', day, ': ' // &
           trim(diag_line(real(day, dp), dg))
      call MPI_Abort(g%comm, 3)
    end if
    if (cfg%stream) then
      if (mod(day, cfg%snapshot_interval) == 0) call put_snapshot(cp, g, s, day)
    end if
    if (cfg%output_interval > 0) then
      if (mod(day, cfg%output_interval) == 0) call write_state(g, snapshot_path(day), s, clo, real(day, dp))
    end if
  end do
  wall = MPI_Wtime() - wall0
  call cpu_time(cpu)
  cpu = cpu - cpu0
  call MPI_Allreduce(MPI_IN_PLACE, wall, 1, MPI_DOUBLE_PRECISION, MPI_MAX, g%comm)
  call MPI_Allreduce(MPI_IN_PLACE, cpu, 1, MPI_DOUBLE_PRECISION, MPI_MAX, g%comm)
  call MPI_Allreduce(MPI_IN_PLACE, cp%seconds, 1, MPI_DOUBLE_PRECISION, MPI_MAX, g%comm)

  if (len_trim(cfg%restart_out) > 0) call write_state(g, trim(cfg%restart_out), s, clo, day0 + cfg%days)
  if (len_trim(cfg%features_file) > 0) then
    allocate (feat(g%nxl, g%nyl, NUM_FEATURES))
    call compute_features(g, cfg, s, feat)
    call write_features(g, trim(cfg%features_file), feat, day0 + cfg%days)
  end if
  if (g%rank == 0) then
    if (coupled) write (output_unit, '(a,f9.4,a,f7.3,a,i0,a)') 'ocean: ', cp%seconds, ' s in mpistage calls (', &
         100 * cp%seconds / max(wall, tiny(wall)), ' % of the run, slowest rank), ', cp%calls, ' network calls'
    write (output_unit, '(a,i0,a,i0,a,i0,a,i0,a,f9.3,a,es10.3,a,es10.3,a)') 'ocean: ', cfg%days, ' days on ', &
         g%nx, 'x', g%ny, ' cells, ', g%nranks, ' ranks, ', wall, ' s (', wall / max(cfg%days, 1), &
         ' s wall, ', cpu / max(cfg%days, 1), ' s CPU of the slowest rank per model day)'
    if (len_trim(cfg%diag_file) > 0) then
      write (diag_unit, '(a,es12.5,a,es12.5,a,es12.5)') '# wall_s ', wall, ' wall_s_per_day ', &
           wall / max(cfg%days, 1), ' cpu_s_per_day ', cpu / max(cfg%days, 1)
      if (coupled) write (diag_unit, '(a,es12.5,a,f8.3,a,i0)') '# mpistage_s ', cp%seconds, ' mpistage_percent ', &
           100 * cp%seconds / max(wall, tiny(wall)), ' network_calls ', cp%calls
      close (diag_unit)
    end if
  end if
  call MPI_Finalize()

contains

  function snapshot_path(d) result(p)
    integer, intent(in) :: d
    character(len=:), allocatable :: p
    write (path, '(a,a,i6.6,a)') trim(cfg%output_prefix), '_d', d, '.bin'
    p = trim(path)
  end function snapshot_path
end program ocean
