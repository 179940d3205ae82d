!> Thickness diffusivity kappa of the eddy closure: none (kappa = 0), the MEKE-like prognostic
!> sub-grid energy E, or kappa from an EKE given by the network (closure = ml, see ocean_coupling).
!>
!> MEKE-like (shared/OCEAN-NOTES.md), E in m^2/s^2 at cell centres:
!>   dE/dt + div(u E) = gamma kappa g' |grad h|^2 / h - E / tau_d + div(kappa_E grad E)
!>   kappa = alpha sqrt(E) L,  L = sqrt(dx dy)
!> The source is built face by face: g' kappa_f (dh/dn)_f^2 on each face, half to each of its two
!> cells; advection is upwind with the face velocities; walls carry no flux. E starts at meke_e0
!> and is floored at meke_efloor. E is stepped forward (Euler) once per dynamics step.
module ocean_closure
  use ocean_config, only : dp, config_t, CLOSURE_MEKE, SECONDS_PER_DAY
  use ocean_grid, only : grid_t
  use ocean_halo, only : halo_exchange, CELL, UFACE, VFACE
  use ocean_dynamics, only : state_t
  implicit none
  private
  public :: closure_init, meke_step, kappa_from_eke

  type, public :: closure_t
    real(dp), allocatable :: kappa(:, :)   ! m^2/s, halo filled
    real(dp), allocatable :: e(:, :)       ! MEKE energy (m^2/s^2); for closure = ml the last EKE
    real(dp), allocatable :: de(:, :)
  end type closure_t

contains

  !> kappa = 0 and E = meke_e0 (MEKE: kappa from E).
  subroutine closure_init(g, cfg, c)
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    type(closure_t), intent(out) :: c
    allocate (c%kappa(0:g%nxl + 1, 0:g%nyl + 1), c%e(0:g%nxl + 1, 0:g%nyl + 1), c%de(0:g%nxl + 1, 0:g%nyl + 1))
    c%kappa = 0; c%de = 0
    c%e = merge(cfg%meke_e0, 0._dp, cfg%closure == CLOSURE_MEKE)
    if (cfg%closure == CLOSURE_MEKE) call kappa_from_eke(g, cfg%meke_alpha, c)
  end subroutine closure_init

  !> kappa = alpha sqrt(E) sqrt(dx dy) from c%e on the owned cells, halo exchanged.
  subroutine kappa_from_eke(g, alpha, c)
    type(grid_t), intent(in) :: g
    real(dp), intent(in) :: alpha
    type(closure_t), intent(inout) :: c
    c%kappa(1:g%nxl, 1:g%nyl) = alpha * sqrt(max(c%e(1:g%nxl, 1:g%nyl), 0._dp)) * sqrt(g%dx * g%dy)
    call halo_exchange(g, c%kappa, CELL)
  end subroutine kappa_from_eke

  !> One forward step of dt for E with the state `s`, then kappa from the new E.
  subroutine meke_step(g, cfg, c, s)
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    type(closure_t), intent(inout) :: c
    type(state_t), intent(inout) :: s
    integer :: i, j
    real(dp) :: rdx, rdy, src, adv, diff, fw, fe, fs, fn, tau_d

    rdx = 1 / g%dx; rdy = 1 / g%dy; tau_d = cfg%meke_tau_days * SECONDS_PER_DAY
    call halo_exchange(g, s%u, UFACE)
    call halo_exchange(g, s%v, VFACE)
    call halo_exchange(g, s%h, CELL)
    call halo_exchange(g, c%e, CELL)
    associate (u => s%u, v => s%v, h => s%h, e => c%e, k => c%kappa)
      do j = 1, g%nyl
        do i = 1, g%nxl
          ! source: half of g' kappa_f (dh/dn)^2 of each face, per unit mass (/ h)
          src = cfg%gprime * 0.5_dp * ( &
                 0.5_dp * (k(i - 1, j) + k(i, j)) * ((h(i, j) - h(i - 1, j)) * rdx)**2 &
               + 0.5_dp * (k(i, j) + k(i + 1, j)) * ((h(i + 1, j) - h(i, j)) * rdx)**2 &
               + 0.5_dp * (k(i, j - 1) + k(i, j)) * ((h(i, j) - h(i, j - 1)) * rdy)**2 &
               + 0.5_dp * (k(i, j) + k(i, j + 1)) * ((h(i, j + 1) - h(i, j)) * rdy)**2) / max(h(i, j), cfg%hmin)
          ! upwind fluxes u E through the four faces
          fw = u(i, j) * merge(e(i - 1, j), e(i, j), u(i, j) > 0)
          fe = u(i + 1, j) * merge(e(i, j), e(i + 1, j), u(i + 1, j) > 0)
          fs = v(i, j) * merge(e(i, j - 1), e(i, j), v(i, j) > 0)
          fn = v(i, j + 1) * merge(e(i, j), e(i, j + 1), v(i, j + 1) > 0)
          adv = (fe - fw) * rdx + (fn - fs) * rdy
          diff = cfg%meke_kappa_e * ((e(i + 1, j) - 2 * e(i, j) + e(i - 1, j)) * rdx * rdx &
                                   + (e(i, j + 1) - 2 * e(i, j) + e(i, j - 1)) * rdy * rdy)
          c%de(i, j) = cfg%meke_gamma * src - adv - e(i, j) / tau_d + diff
        end do
      end do
      e(1:g%nxl, 1:g%nyl) = max(e(1:g%nxl, 1:g%nyl) + cfg%dt * c%de(1:g%nxl, 1:g%nyl), cfg%meke_efloor)
    end associate
    call kappa_from_eke(g, cfg%meke_alpha, c)
  end subroutine meke_step
end module ocean_closure
