!> The model's calls to the mpistage servers (Fortran client, `use mpistage`).
!>
!> Keys (each rank's keys share the hash tag {<run>.r<rank>}, so they live on one shard):
!>   snapshots (stream = .true., every snapshot_interval days), for model day D (6 digits):
!>     {<run>.r<rank>}.dDDDDDD.u, .v, .h   float64 (nxl, nyl), cell-centred u, v and h of the block
!>     {<run>.r<rank>}.dDDDDDD.meta        int64 [i0, j0, nxl, nyl, nx, ny, D, nranks]:
!>                                         the block is cells i0+1..i0+nxl, j0+1..j0+nyl of nx x ny
!>   closure = ml, once every coupling_interval days (overwritten each time):
!>     {<run>.r<rank>}.features            float32 (npoints, 4), npoints = nxl * nyl, point
!>                                         p = i + (j - 1) nxl; the raw features, MKE and |grad h|
!>                                         floored at 1e-20 so that their logs are finite
!>     {<run>.r<rank>}.features_pre        after the script <script_name>.preprocess(features,
!>                                         <means_key>, <stds_key>)
!>     {<run>.r<rank>}.ln_eke              float32 (npoints, 1) from the model <model_name>
!> The network's ln EKE is clipped to [-30, 0] (EKE <= 1 m^2/s^2) before kappa = alpha sqrt(EKE) L.
!> Every call is timed with MPI_Wtime (seconds: coupling_t%seconds).
module ocean_coupling
  use, intrinsic :: iso_fortran_env, only : real32, int64, error_unit
  use mpi_f08
  use mpistage, only : client_type, run_handle, mpistage_comm, get_last_error, SRNoError
  use ocean_config, only : dp, config_t
  use ocean_grid, only : grid_t
  use ocean_halo, only : halo_exchange, UFACE, VFACE
  use ocean_dynamics, only : state_t
  use ocean_closure, only : closure_t, kappa_from_eke
  use ocean_features, only : compute_features, NUM_FEATURES
  implicit none
  private
  public :: coupling_comm, coupling_init, put_snapshot, request_eke, receive_eke

  real(real32), parameter :: FEATURE_FLOOR = 1e-20, LN_EKE_MIN = -30, LN_EKE_MAX = 0
  integer, parameter :: KEY_LEN = 160

  type, public :: coupling_t
    type(client_type) :: client
    type(run_handle) :: handle
    logical :: pending = .false.
    real(dp) :: seconds = 0                ! wall time spent in mpistage calls on this rank
    integer :: calls = 0                   ! network calls made
    character(len=:), allocatable :: tag   ! {<run>.r<rank>}
    real(real32), allocatable :: feat(:, :), ln_eke(:, :)
  end type coupling_t

contains

  !> The application's communicator (MPI_COMM_WORLD in connect mode, the world less the server
  !> ranks in an MPMD job); connects to the servers (collective).
  function coupling_comm() result(comm)
    type(MPI_Comm) :: comm
    comm = mpistage_comm()
  end function coupling_comm

  subroutine coupling_init(cp, g, cfg)
    type(coupling_t), intent(inout) :: cp
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    character(len=KEY_LEN) :: tag
    real(dp) :: t0
    t0 = MPI_Wtime()
    call check(cp%client%initialize('ocean') == SRNoError, 'initialize')
    cp%seconds = cp%seconds + (MPI_Wtime() - t0)
    write (tag, '(a,a,a,i0,a)') '{', trim(cfg%run_name), '.r', g%rank, '}'
    cp%tag = trim(tag)
    allocate (cp%feat(g%nxl * g%nyl, NUM_FEATURES), cp%ln_eke(g%nxl * g%nyl, 1))
  end subroutine coupling_init

  !> Put this block's cell-centred u, v, h and its metadata for model `day`.
  subroutine put_snapshot(cp, g, s, day)
    type(coupling_t), intent(inout) :: cp
    type(grid_t), intent(in) :: g
    type(state_t), intent(inout) :: s
    integer, intent(in) :: day
    real(dp) :: uc(g%nxl, g%nyl), vc(g%nxl, g%nyl), t0
    integer(int64) :: meta(8)
    character(len=KEY_LEN) :: base

    call halo_exchange(g, s%u, UFACE)
    call halo_exchange(g, s%v, VFACE)
    uc = 0.5_dp * (s%u(1:g%nxl, 1:g%nyl) + s%u(2:g%nxl + 1, 1:g%nyl))
    vc = 0.5_dp * (s%v(1:g%nxl, 1:g%nyl) + s%v(1:g%nxl, 2:g%nyl + 1))
    meta = int([g%i0, g%j0, g%nxl, g%nyl, g%nx, g%ny, day, g%nranks], int64)
    write (base, '(a,a,i6.6)') cp%tag, '.d', day
    t0 = MPI_Wtime()
    call check(cp%client%put_tensor(trim(base) // '.u', uc, shape(uc)) == SRNoError, 'put_tensor u')
    call check(cp%client%put_tensor(trim(base) // '.v', vc, shape(vc)) == SRNoError, 'put_tensor v')
    call check(cp%client%put_tensor(trim(base) // '.h', s%h(1:g%nxl, 1:g%nyl), [g%nxl, g%nyl]) == SRNoError, &
               'put_tensor h')
    call check(cp%client%put_tensor(trim(base) // '.meta', meta, shape(meta)) == SRNoError, 'put_tensor meta')
    cp%seconds = cp%seconds + (MPI_Wtime() - t0)
  end subroutine put_snapshot

  !> Put the features of the current state, run the preprocessing script, then start the network
  !> (asynchronous: receive_eke waits for it, after the model has gone on stepping).
  subroutine request_eke(cp, g, cfg, s)
    type(coupling_t), intent(inout) :: cp
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    type(state_t), intent(inout) :: s
    real(dp) :: f(g%nxl, g%nyl, NUM_FEATURES), t0
    integer :: k

    call compute_features(g, cfg, s, f)
    do k = 1, NUM_FEATURES
      cp%feat(:, k) = real(reshape(f(:, :, k), [g%nxl * g%nyl]), real32)
    end do
    cp%feat(:, 1) = max(cp%feat(:, 1), FEATURE_FLOOR)
    cp%feat(:, 3) = max(cp%feat(:, 3), FEATURE_FLOOR)
    t0 = MPI_Wtime()
    call check(cp%client%put_tensor(key(cp, 'features'), cp%feat, shape(cp%feat)) == SRNoError, 'put_tensor features')
    call check(cp%client%run_script(trim(cfg%script_name), 'preprocess', &
               [character(len=KEY_LEN) :: key(cp, 'features'), cfg%means_key, cfg%stds_key], &
               [character(len=KEY_LEN) :: key(cp, 'features_pre')]) == SRNoError, 'run_script ' // trim(cfg%script_name))
    call check(cp%client%run_model_async(trim(cfg%model_name), [character(len=KEY_LEN) :: key(cp, 'features_pre')], &
               [character(len=KEY_LEN) :: key(cp, 'ln_eke')], cp%handle) == SRNoError, 'run_model_async')
    cp%seconds = cp%seconds + (MPI_Wtime() - t0)
    cp%pending = .true.
  end subroutine request_eke

  !> Wait for the network, unpack ln EKE and set kappa = ml_alpha sqrt(EKE) L (c%e holds EKE).
  subroutine receive_eke(cp, g, cfg, c)
    type(coupling_t), intent(inout) :: cp
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    type(closure_t), intent(inout) :: c
    real(dp) :: t0

    if (.not. cp%pending) return
    t0 = MPI_Wtime()
    call check(cp%handle%wait() == SRNoError, 'run_model ' // trim(cfg%model_name))
    call check(cp%client%unpack_tensor(key(cp, 'ln_eke'), cp%ln_eke, shape(cp%ln_eke)) == SRNoError, &
               'unpack_tensor ln_eke')
    cp%seconds = cp%seconds + (MPI_Wtime() - t0)
    cp%pending = .false.
    cp%calls = cp%calls + 1
    c%e(1:g%nxl, 1:g%nyl) = reshape(exp(real(min(max(cp%ln_eke(:, 1), LN_EKE_MIN), LN_EKE_MAX), dp)), &
                                    [g%nxl, g%nyl])
    call kappa_from_eke(g, cfg%ml_alpha, c)
  end subroutine receive_eke

  !> The key of this rank's `what` tensor: {<run>.r<rank>}.<what>.
  function key(cp, what) result(k)
    type(coupling_t), intent(in) :: cp
    character(len=*), intent(in) :: what
    character(len=KEY_LEN) :: k
    k = cp%tag // '.' // what
  end function key

  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(len=*), intent(in) :: what
    if (.not. ok) then
      write (error_unit, '(a)') 'ocean: mpistage ' // what // ' failed: ' // get_last_error()
      call MPI_Abort(MPI_COMM_WORLD, 4)
    end if
  end subroutine check
end module ocean_coupling
