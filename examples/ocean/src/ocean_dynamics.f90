!> The 1.5-layer reduced-gravity shallow-water equations on the C-grid, stepped with SSP-RK3.
!>
!> One active layer of thickness h over a motionless deep layer:
!>   du/dt =  q V~  - dB/dx - nu4 lap(lap u) - r u + tau_x / (rho0 h_u)
!>   dv/dt = -q U~  - dB/dy - nu4 lap(lap v) - r v
!>   dh/dt = -d(U)/dx - d(V)/dy + div(kappa grad h)
!> with mass fluxes U = h_u u, V = h_v v (h_u, h_v: two-point means of h on the faces), potential
!> vorticity q = (f + zeta) / h_q at cell corners (zeta = dv/dx - du/dy, h_q: four-point mean),
!> Bernoulli function B = g' h + KE, KE = (mean_x(u^2) + mean_y(v^2)) / 2 at cell centres.
!> The PV flux is Sadourny's energy-conserving form: q V~ = mean_y(q mean_x(V)),
!> q U~ = mean_x(q mean_y(U)). The biharmonic term is lap(lap u) with a halo exchange of lap u,
!> which has the same wall rule as u (no slip). Wind: tau_x = -tau0 cos(2 pi y / Ly);
!> f = f0 + beta (y - Ly/2). h is floored at hmin where it divides. kappa (the closure's
!> thickness diffusivity, cell centres) is held fixed during a step.
!>
!> SSP-RK3 (Shu-Osher): s1 = s + dt L(s); s2 = 3/4 s + 1/4 (s1 + dt L(s1));
!> s(t + dt) = 1/3 s + 2/3 (s2 + dt L(s2)).
module ocean_dynamics
  use ocean_config, only : dp, config_t
  use ocean_grid, only : grid_t
  use ocean_halo, only : halo_exchange, CELL, UFACE, VFACE
  implicit none
  private
  public :: dynamics_init, rk3_step, cold_start

  real(dp), parameter :: PI = 3.14159265358979323846_dp

  !> Prognostic fields of one block, each (0:nxl+1, 0:nyl+1).
  type, public :: state_t
    real(dp), allocatable :: u(:, :), v(:, :), h(:, :)
  end type state_t

  !> Fixed coefficients and work arrays of the time stepper.
  type, public :: dynamics_t
    real(dp), allocatable :: fq(:, :)               ! Coriolis parameter at the corners
    real(dp), allocatable :: taux(:)                ! wind stress on the u faces' rows
    real(dp), allocatable :: umask(:, :), vmask(:, :) ! 0 on wall faces, 1 elsewhere
    real(dp), allocatable :: uh(:, :), vh(:, :), q(:, :), b(:, :), lapu(:, :), lapv(:, :)
    real(dp), allocatable :: du(:, :), dv(:, :), dh(:, :), u0(:, :), v0(:, :), h0(:, :)
  end type dynamics_t

contains

  !> Allocate the state and the work arrays; set f, the wind and the wall masks of this block.
  subroutine dynamics_init(g, cfg, d, s)
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    type(dynamics_t), intent(out) :: d
    type(state_t), intent(out) :: s
    integer :: j, nxl, nyl
    real(dp) :: y

    nxl = g%nxl; nyl = g%nyl
    call alloc(s%u); call alloc(s%v); call alloc(s%h)
    call alloc(d%fq); call alloc(d%umask); call alloc(d%vmask); call alloc(d%uh); call alloc(d%vh)
    call alloc(d%q); call alloc(d%b); call alloc(d%lapu); call alloc(d%lapv)
    call alloc(d%du); call alloc(d%dv); call alloc(d%dh); call alloc(d%u0); call alloc(d%v0); call alloc(d%h0)
    allocate (d%taux(0:nyl + 1))
    do j = 0, nyl + 1
      y = (g%j0 + j - 1) * g%dy                      ! corners and v faces
      d%fq(:, j) = cfg%f0 + cfg%beta * (y - 0.5_dp * cfg%ly)
      y = (g%j0 + j - 0.5_dp) * g%dy                 ! cell centres and u faces
      d%taux(j) = -cfg%tau0 * cos(2 * PI * y / cfg%ly)
    end do
    d%umask = 1; d%vmask = 1
    if (g%at_west) d%umask(1, :) = 0
    if (g%at_south) d%vmask(:, 1) = 0
    s%h = cfg%h0

  contains

    subroutine alloc(a)
      real(dp), allocatable, intent(out) :: a(:, :)
      allocate (a(0:nxl + 1, 0:nyl + 1))
      a = 0
    end subroutine alloc
  end subroutine dynamics_init

  !> Rest and h = H0 + perturb * r, r uniform in (-1, 1) from cfg%seed, drawn on rank 0 for the
  !> whole basin so that the state does not depend on the decomposition.
  subroutine cold_start(g, cfg, s)
    use mpi_f08, only : MPI_Bcast, MPI_DOUBLE_PRECISION
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    type(state_t), intent(inout) :: s
    real(dp), allocatable :: noise(:, :)
    integer, allocatable :: seed(:)
    integer :: n, k

    s%u = 0; s%v = 0; s%h = cfg%h0
    if (cfg%perturb == 0) return
    allocate (noise(g%nx, g%ny))
    if (g%rank == 0) then
      call random_seed(size=n)
      allocate (seed(n))
      seed = 104729 * (cfg%seed + 1) + [(7919 * k, k = 1, n)]
      call random_seed(put=seed)
      call random_number(noise)
      noise = 2 * noise - 1
    end if
    call MPI_Bcast(noise, size(noise), MPI_DOUBLE_PRECISION, 0, g%comm)
    s%h(1:g%nxl, 1:g%nyl) = cfg%h0 + cfg%perturb * noise(g%i0 + 1:g%i0 + g%nxl, g%j0 + 1:g%j0 + g%nyl)
  end subroutine cold_start

  !> Advance `s` by one SSP-RK3 step of cfg%dt with thickness diffusivity `kappa` (halo filled).
  subroutine rk3_step(g, cfg, d, s, kappa)
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    type(dynamics_t), intent(inout) :: d
    type(state_t), intent(inout) :: s
    real(dp), intent(in) :: kappa(0:, 0:)
    integer :: nxl, nyl
    real(dp) :: dt

    nxl = g%nxl; nyl = g%nyl; dt = cfg%dt
    d%u0(1:nxl, 1:nyl) = s%u(1:nxl, 1:nyl)
    d%v0(1:nxl, 1:nyl) = s%v(1:nxl, 1:nyl)
    d%h0(1:nxl, 1:nyl) = s%h(1:nxl, 1:nyl)

    call tendencies(g, cfg, d, s, kappa)
    s%u(1:nxl, 1:nyl) = d%u0(1:nxl, 1:nyl) + dt * d%du(1:nxl, 1:nyl)
    s%v(1:nxl, 1:nyl) = d%v0(1:nxl, 1:nyl) + dt * d%dv(1:nxl, 1:nyl)
    s%h(1:nxl, 1:nyl) = d%h0(1:nxl, 1:nyl) + dt * d%dh(1:nxl, 1:nyl)

    call tendencies(g, cfg, d, s, kappa)
    s%u(1:nxl, 1:nyl) = 0.75_dp * d%u0(1:nxl, 1:nyl) + 0.25_dp * (s%u(1:nxl, 1:nyl) + dt * d%du(1:nxl, 1:nyl))
    s%v(1:nxl, 1:nyl) = 0.75_dp * d%v0(1:nxl, 1:nyl) + 0.25_dp * (s%v(1:nxl, 1:nyl) + dt * d%dv(1:nxl, 1:nyl))
    s%h(1:nxl, 1:nyl) = 0.75_dp * d%h0(1:nxl, 1:nyl) + 0.25_dp * (s%h(1:nxl, 1:nyl) + dt * d%dh(1:nxl, 1:nyl))

    call tendencies(g, cfg, d, s, kappa)
    s%u(1:nxl, 1:nyl) = d%u0(1:nxl, 1:nyl) / 3 + 2 * (s%u(1:nxl, 1:nyl) + dt * d%du(1:nxl, 1:nyl)) / 3
    s%v(1:nxl, 1:nyl) = d%v0(1:nxl, 1:nyl) / 3 + 2 * (s%v(1:nxl, 1:nyl) + dt * d%dv(1:nxl, 1:nyl)) / 3
    s%h(1:nxl, 1:nyl) = d%h0(1:nxl, 1:nyl) / 3 + 2 * (s%h(1:nxl, 1:nyl) + dt * d%dh(1:nxl, 1:nyl)) / 3
  end subroutine rk3_step

  !> d%du, d%dv, d%dh = the right-hand sides above on the owned points (0 on wall faces).
  subroutine tendencies(g, cfg, d, s, kappa)
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    type(dynamics_t), intent(inout) :: d
    type(state_t), intent(inout) :: s
    real(dp), intent(in) :: kappa(0:, 0:)

    call halo_exchange(g, s%u, UFACE)
    call halo_exchange(g, s%v, VFACE)
    call halo_exchange(g, s%h, CELL)
    call fluxes(g%nxl, g%nyl, 1 / g%dx, 1 / g%dy, cfg%gprime, cfg%hmin, s%u, s%v, s%h, d%fq, &
                d%uh, d%vh, d%q, d%b, d%lapu, d%lapv)
    call halo_exchange(g, d%lapu, UFACE)
    call halo_exchange(g, d%lapv, VFACE)
    call right_hand_sides(g%nxl, g%nyl, 1 / g%dx, 1 / g%dy, cfg, s%u, s%v, s%h, kappa, d%uh, d%vh, d%q, d%b, &
                          d%lapu, d%lapv, d%taux, d%umask, d%vmask, d%du, d%dv, d%dh)
  end subroutine tendencies

  !> Mass fluxes, PV at the corners, Bernoulli function and the first Laplacian of u and v.
  !> (Explicit-shape arrays: contiguous and alias-free, so the loops vectorize.)
  subroutine fluxes(nxl, nyl, rdx, rdy, gprime, hmin, u, v, h, fq, uh, vh, q, b, lapu, lapv)
    integer, intent(in) :: nxl, nyl
    real(dp), intent(in) :: rdx, rdy, gprime, hmin
    real(dp), dimension(0:nxl + 1, 0:nyl + 1), intent(in) :: u, v, h, fq
    real(dp), dimension(0:nxl + 1, 0:nyl + 1), intent(inout) :: uh, vh, q, b, lapu, lapv
    integer :: i, j
    real(dp) :: zeta, hq, rdx2, rdy2

    rdx2 = rdx * rdx; rdy2 = rdy * rdy
    ! mass fluxes U = h_u u, V = h_v v
    do j = 0, nyl + 1
      do i = 1, nxl + 1
        uh(i, j) = 0.5_dp * (h(i - 1, j) + h(i, j)) * u(i, j)
      end do
    end do
    do j = 1, nyl + 1
      do i = 0, nxl + 1
        vh(i, j) = 0.5_dp * (h(i, j - 1) + h(i, j)) * v(i, j)
      end do
    end do
    ! q = (f + zeta) / h_q at the corners
    do j = 1, nyl + 1
      do i = 1, nxl + 1
        zeta = (v(i, j) - v(i - 1, j)) * rdx - (u(i, j) - u(i, j - 1)) * rdy
        hq = 0.25_dp * (h(i - 1, j - 1) + h(i, j - 1) + h(i - 1, j) + h(i, j))
        q(i, j) = (fq(i, j) + zeta) / max(hq, hmin)
      end do
    end do
    ! B = g' h + (mean_x(u^2) + mean_y(v^2)) / 2
    do j = 0, nyl
      do i = 0, nxl
        b(i, j) = gprime * h(i, j) + 0.25_dp * (u(i, j)**2 + u(i + 1, j)**2 + v(i, j)**2 + v(i, j + 1)**2)
      end do
    end do
    ! first Laplacian of u and v (its halo is exchanged with the velocity's wall rule)
    do j = 1, nyl
      do i = 1, nxl
        lapu(i, j) = (u(i + 1, j) - 2 * u(i, j) + u(i - 1, j)) * rdx2 + (u(i, j + 1) - 2 * u(i, j) + u(i, j - 1)) * rdy2
        lapv(i, j) = (v(i + 1, j) - 2 * v(i, j) + v(i - 1, j)) * rdx2 + (v(i, j + 1) - 2 * v(i, j) + v(i, j - 1)) * rdy2
      end do
    end do
  end subroutine fluxes

  !> du, dv, dh on the owned points from the fluxes and the exchanged Laplacians.
  subroutine right_hand_sides(nxl, nyl, rdx, rdy, cfg, u, v, h, kappa, uh, vh, q, b, lapu, lapv, taux, &
                              umask, vmask, du, dv, dh)
    integer, intent(in) :: nxl, nyl
    real(dp), intent(in) :: rdx, rdy
    type(config_t), intent(in) :: cfg
    real(dp), dimension(0:nxl + 1, 0:nyl + 1), intent(in) :: u, v, h, kappa, uh, vh, q, b, lapu, lapv, umask, vmask
    real(dp), intent(in) :: taux(0:nyl + 1)
    real(dp), dimension(0:nxl + 1, 0:nyl + 1), intent(inout) :: du, dv, dh
    integer :: i, j
    real(dp) :: rdx2, rdy2, nu4, drag, rho0, hmin, qv, qu, hu, fx_w, fx_e, fy_s, fy_n

    rdx2 = rdx * rdx; rdy2 = rdy * rdy
    nu4 = cfg%nu4; drag = cfg%drag; rho0 = cfg%rho0; hmin = cfg%hmin
    do j = 1, nyl
      do i = 1, nxl
        ! u: + mean_y(q mean_x(V)) - dB/dx - nu4 lap(lap u) - r u + tau / (rho0 h_u)
        qv = 0.25_dp * (q(i, j) * (vh(i - 1, j) + vh(i, j)) + q(i, j + 1) * (vh(i - 1, j + 1) + vh(i, j + 1)))
        hu = max(0.5_dp * (h(i - 1, j) + h(i, j)), hmin)
        du(i, j) = umask(i, j) * (qv - (b(i, j) - b(i - 1, j)) * rdx &
             - nu4 * ((lapu(i + 1, j) - 2 * lapu(i, j) + lapu(i - 1, j)) * rdx2 &
                    + (lapu(i, j + 1) - 2 * lapu(i, j) + lapu(i, j - 1)) * rdy2) &
             - drag * u(i, j) + taux(j) / (rho0 * hu))
        ! v: - mean_x(q mean_y(U)) - dB/dy - nu4 lap(lap v) - r v
        qu = 0.25_dp * (q(i, j) * (uh(i, j - 1) + uh(i, j)) + q(i + 1, j) * (uh(i + 1, j - 1) + uh(i + 1, j)))
        dv(i, j) = vmask(i, j) * (-qu - (b(i, j) - b(i, j - 1)) * rdy &
             - nu4 * ((lapv(i + 1, j) - 2 * lapv(i, j) + lapv(i - 1, j)) * rdx2 &
                    + (lapv(i, j + 1) - 2 * lapv(i, j) + lapv(i, j - 1)) * rdy2) &
             - drag * v(i, j))
        ! h: - div(U, V) + div(kappa grad h), kappa on faces = two-point mean
        fx_w = 0.5_dp * (kappa(i - 1, j) + kappa(i, j)) * (h(i, j) - h(i - 1, j)) * rdx
        fx_e = 0.5_dp * (kappa(i, j) + kappa(i + 1, j)) * (h(i + 1, j) - h(i, j)) * rdx
        fy_s = 0.5_dp * (kappa(i, j - 1) + kappa(i, j)) * (h(i, j) - h(i, j - 1)) * rdy
        fy_n = 0.5_dp * (kappa(i, j) + kappa(i, j + 1)) * (h(i, j + 1) - h(i, j)) * rdy
        dh(i, j) = -(uh(i + 1, j) - uh(i, j)) * rdx - (vh(i, j + 1) - vh(i, j)) * rdy &
             + (fx_e - fx_w) * rdx + (fy_n - fy_s) * rdy
      end do
    end do
  end subroutine right_hand_sides
end module ocean_dynamics
