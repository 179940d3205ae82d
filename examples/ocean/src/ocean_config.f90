!> Run configuration of the ocean model: the namelist groups, their defaults and checks.
!>
!> Every rank reads the same namelist file (groups &grid, &physics, &run, &closure, &coupling; each
!> optional, any variable may be left out). Defaults are the fine 12.5 km double gyre of
!> shared/OCEAN-NOTES.md. Times in the namelist are in seconds (dt) or whole model days.
module ocean_config
  use, intrinsic :: iso_fortran_env, only : real64, error_unit
  implicit none
  private
  public :: read_config

  integer, parameter, public :: dp = real64
  integer, parameter, public :: PATH_LEN = 512
  integer, parameter, public :: CLOSURE_NONE = 0, CLOSURE_MEKE = 1, CLOSURE_ML = 2
  real(dp), parameter, public :: SECONDS_PER_DAY = 86400._dp

  type, public :: config_t
    ! &grid: cells, basin size (m), process grid (0 = chosen by MPI_Dims_create)
    integer :: nx = 128, ny = 128, px = 0, py = 0
    real(dp) :: lx = 1.6e6_dp, ly = 1.6e6_dp
    ! &physics: f = f0 + beta (y - Ly/2); reduced gravity g'; wind stress tau0; biharmonic nu4; drag r
    real(dp) :: f0 = 1.0e-4_dp, beta = 2.0e-11_dp, h0 = 800._dp, gprime = 0.02_dp, rho0 = 1000._dp
    real(dp) :: tau0 = 0.1_dp, nu4 = 1.0e10_dp, drag = 1.0e-7_dp, hmin = 1._dp
    ! &run
    real(dp) :: dt = 1080._dp
    integer :: days = 10, steps_per_day = 0
    integer :: seed = 0                    ! seed of the cold-start h perturbation
    real(dp) :: perturb = 0._dp            ! its amplitude (m): h = H0 + perturb * (uniform(-1, 1))
    character(len=PATH_LEN) :: restart_in = '', restart_out = ''
    character(len=PATH_LEN) :: output_prefix = '', diag_file = '', features_file = ''
    integer :: output_interval = 0         ! days between state files <output_prefix>_dNNNNNN.bin
    ! &closure: thickness diffusivity kappa from scheme = none | meke | ml
    integer :: closure = CLOSURE_NONE
    real(dp) :: meke_alpha = 0.02_dp, meke_tau_days = 30._dp, meke_kappa_e = 5000._dp
    real(dp) :: meke_gamma = 1._dp, meke_e0 = 1.0e-3_dp, meke_efloor = 1.0e-8_dp
    real(dp) :: ml_alpha = 0.02_dp
    integer :: coupling_interval = 1       ! days between network calls (closure = ml)
    ! &coupling: names on the mpistage servers
    logical :: stream = .false.            ! put u, v, h every snapshot_interval days
    integer :: snapshot_interval = 5
    character(len=128) :: run_name = 'ocean', model_name = 'eke_resnet', script_name = 'eke_preprocess'
    character(len=128) :: means_key = 'eke_means', stds_key = 'eke_stds'   ! float32 (4): standardization
  end type config_t

contains

  !> Read the namelist file `path` into `cfg`; stops with a message on a bad value.
  subroutine read_config(path, cfg)
    character(len=*), intent(in) :: path
    type(config_t), intent(out) :: cfg
    integer :: nx, ny, px, py, days, seed, output_interval, coupling_interval, snapshot_interval
    real(dp) :: lx, ly, f0, beta, h0, gprime, rho0, tau0, nu4, drag, hmin, dt, perturb
    real(dp) :: meke_alpha, meke_tau_days, meke_kappa_e, meke_gamma, meke_e0, meke_efloor, ml_alpha
    character(len=PATH_LEN) :: restart_in, restart_out, output_prefix, diag_file, features_file
    character(len=16) :: scheme
    logical :: stream
    character(len=128) :: run_name, model_name, script_name, means_key, stds_key
    integer :: unit, ios
    character(len=256) :: msg
    namelist /grid/ nx, ny, lx, ly, px, py
    namelist /physics/ f0, beta, h0, gprime, rho0, tau0, nu4, drag, hmin
    namelist /run/ dt, days, seed, perturb, restart_in, restart_out, output_prefix, output_interval, &
         diag_file, features_file
    namelist /closure/ scheme, meke_alpha, meke_tau_days, meke_kappa_e, meke_gamma, meke_e0, meke_efloor, &
         ml_alpha, coupling_interval
    namelist /coupling/ stream, snapshot_interval, run_name, model_name, script_name, means_key, stds_key

    nx = cfg%nx; ny = cfg%ny; px = cfg%px; py = cfg%py; lx = cfg%lx; ly = cfg%ly
    f0 = cfg%f0; beta = cfg%beta; h0 = cfg%h0; gprime = cfg%gprime; rho0 = cfg%rho0
    tau0 = cfg%tau0; nu4 = cfg%nu4; drag = cfg%drag; hmin = cfg%hmin
    dt = cfg%dt; days = cfg%days; seed = cfg%seed; perturb = cfg%perturb
    restart_in = ''; restart_out = ''; output_prefix = ''; diag_file = ''; features_file = ''
    output_interval = cfg%output_interval
    scheme = 'none'
    meke_alpha = cfg%meke_alpha; meke_tau_days = cfg%meke_tau_days; meke_kappa_e = cfg%meke_kappa_e
    meke_gamma = cfg%meke_gamma; meke_e0 = cfg%meke_e0; meke_efloor = cfg%meke_efloor
    ml_alpha = cfg%ml_alpha; coupling_interval = cfg%coupling_interval
    stream = cfg%stream; snapshot_interval = cfg%snapshot_interval
    run_name = cfg%run_name; model_name = cfg%model_name; script_name = cfg%script_name
    means_key = cfg%means_key; stds_key = cfg%stds_key

    open (newunit=unit, file=path, status='old', action='read', iostat=ios, iomsg=msg)
    if (ios /= 0) call fail('cannot open namelist ' // trim(path) // ': ' // trim(msg))
    read (unit, nml=grid, iostat=ios, iomsg=msg)
    call check_read('grid')
    rewind (unit)
    read (unit, nml=physics, iostat=ios, iomsg=msg)
    call check_read('physics')
    rewind (unit)
    read (unit, nml=run, iostat=ios, iomsg=msg)
    call check_read('run')
    rewind (unit)
    read (unit, nml=closure, iostat=ios, iomsg=msg)
    call check_read('closure')
    rewind (unit)
    read (unit, nml=coupling, iostat=ios, iomsg=msg)
    call check_read('coupling')
    close (unit)

    cfg%nx = nx; cfg%ny = ny; cfg%px = px; cfg%py = py; cfg%lx = lx; cfg%ly = ly
    cfg%f0 = f0; cfg%beta = beta; cfg%h0 = h0; cfg%gprime = gprime; cfg%rho0 = rho0
    cfg%tau0 = tau0; cfg%nu4 = nu4; cfg%drag = drag; cfg%hmin = hmin
    cfg%dt = dt; cfg%days = days; cfg%seed = seed; cfg%perturb = perturb
    cfg%restart_in = restart_in; cfg%restart_out = restart_out; cfg%output_prefix = output_prefix
    cfg%output_interval = output_interval; cfg%diag_file = diag_file; cfg%features_file = features_file
    cfg%meke_alpha = meke_alpha; cfg%meke_tau_days = meke_tau_days; cfg%meke_kappa_e = meke_kappa_e
    cfg%meke_gamma = meke_gamma; cfg%meke_e0 = meke_e0; cfg%meke_efloor = meke_efloor
    cfg%ml_alpha = ml_alpha; cfg%coupling_interval = coupling_interval
    cfg%stream = stream; cfg%snapshot_interval = snapshot_interval
    cfg%run_name = run_name; cfg%model_name = model_name; cfg%script_name = script_name
    cfg%means_key = means_key; cfg%stds_key = stds_key

    select case (trim(scheme))
    case ('none'); cfg%closure = CLOSURE_NONE
    case ('meke'); cfg%closure = CLOSURE_MEKE
    case ('ml'); cfg%closure = CLOSURE_ML
    case default; call fail('&closure scheme must be none, meke or ml, got "' // trim(scheme) // '"')
    end select
    call validate(cfg)

  contains

    subroutine check_read(group)
      character(len=*), intent(in) :: group
      if (ios > 0) call fail('namelist &' // group // ' in ' // trim(path) // ': ' // trim(msg))
    end subroutine check_read
  end subroutine read_config

  subroutine validate(cfg)
    type(config_t), intent(inout) :: cfg
    if (cfg%nx < 3 .or. cfg%ny < 3) call fail('nx and ny must be at least 3')
    if (cfg%px < 0 .or. cfg%py < 0) call fail('px and py must be >= 0')
    if (cfg%lx <= 0 .or. cfg%ly <= 0 .or. cfg%h0 <= 0 .or. cfg%gprime <= 0 .or. cfg%rho0 <= 0) &
         call fail('lx, ly, h0, gprime and rho0 must be positive')
    if (cfg%nu4 < 0 .or. cfg%drag < 0 .or. cfg%hmin <= 0) call fail('nu4, drag must be >= 0 and hmin > 0')
    if (cfg%dt <= 0) call fail('dt must be positive')
    cfg%steps_per_day = nint(SECONDS_PER_DAY / cfg%dt)
    if (cfg%steps_per_day < 1 .or. abs(cfg%steps_per_day * cfg%dt - SECONDS_PER_DAY) > 1e-6_dp) &
         call fail('dt must divide a day (86400 s) into a whole number of steps')
    if (cfg%days < 0) call fail('days must be >= 0')
    if (cfg%output_interval < 0) call fail('output_interval must be >= 0')
    if (cfg%output_interval > 0 .and. len_trim(cfg%output_prefix) == 0) &
         call fail('output_interval > 0 needs output_prefix')
    if (cfg%coupling_interval < 1 .or. cfg%snapshot_interval < 1) &
         call fail('coupling_interval and snapshot_interval must be >= 1')
    if (cfg%meke_alpha < 0 .or. cfg%meke_tau_days <= 0 .or. cfg%meke_kappa_e < 0 .or. cfg%meke_e0 <= 0 &
         .or. cfg%meke_efloor <= 0 .or. cfg%ml_alpha < 0) call fail('bad &closure constants')
  end subroutine validate

  subroutine fail(msg)
    character(len=*), intent(in) :: msg
    write (error_unit, '(a)') 'ocean: ' // msg
    error stop 2
  end subroutine fail
end module ocean_config
