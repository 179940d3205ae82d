!> The four features of Partee et al. (section 4.3) on the model's own grid, at cell centres:
!>   1. MKE   = (uc^2 + vc^2) / 2                         uc, vc: face velocities averaged to the centre
!>   2. zeta  = d(vc)/dx - d(uc)/dy                       central differences over two cells
!>   3. |grad h| = sqrt((dh/dx)^2 + (dh/dy)^2)            central differences (the interface slope)
!>   4. Rd / sqrt(dx dy),  Rd = sqrt(g' h) / |f|,         f at the cell centre
!> At wall cells the missing neighbour is the zero-gradient ghost (these cells are left out of
!> the training data; the model still needs kappa there). Same definitions as
!> examples/ocean/features.py applied to the coarse-grained fields.
module ocean_features
  use ocean_config, only : dp, config_t
  use ocean_grid, only : grid_t
  use ocean_halo, only : halo_exchange, CELL, UFACE, VFACE
  use ocean_dynamics, only : state_t
  implicit none
  private
  public :: compute_features

  integer, parameter, public :: NUM_FEATURES = 4

contains

  !> feat(i, j, :) = the four features of owned cell (i, j).
  subroutine compute_features(g, cfg, s, feat)
    type(grid_t), intent(in) :: g
    type(config_t), intent(in) :: cfg
    type(state_t), intent(inout) :: s
    real(dp), intent(out) :: feat(:, :, :)
    real(dp), allocatable :: uc(:, :), vc(:, :)
    integer :: i, j
    real(dp) :: f, dhdx, dhdy

    call halo_exchange(g, s%u, UFACE)
    call halo_exchange(g, s%v, VFACE)
    call halo_exchange(g, s%h, CELL)
    allocate (uc(0:g%nxl + 1, 0:g%nyl + 1), vc(0:g%nxl + 1, 0:g%nyl + 1))
    uc = 0; vc = 0
    do j = 1, g%nyl
      do i = 1, g%nxl
        uc(i, j) = 0.5_dp * (s%u(i, j) + s%u(i + 1, j))
        vc(i, j) = 0.5_dp * (s%v(i, j) + s%v(i, j + 1))
      end do
    end do
    call halo_exchange(g, uc, CELL)
    call halo_exchange(g, vc, CELL)
    do j = 1, g%nyl
      f = abs(cfg%f0 + cfg%beta * ((g%j0 + j - 0.5_dp) * g%dy - 0.5_dp * cfg%ly))
      do i = 1, g%nxl
        feat(i, j, 1) = 0.5_dp * (uc(i, j)**2 + vc(i, j)**2)
        feat(i, j, 2) = (vc(i + 1, j) - vc(i - 1, j)) / (2 * g%dx) - (uc(i, j + 1) - uc(i, j - 1)) / (2 * g%dy)
        dhdx = (s%h(i + 1, j) - s%h(i - 1, j)) / (2 * g%dx)
        dhdy = (s%h(i, j + 1) - s%h(i, j - 1)) / (2 * g%dy)
        feat(i, j, 3) = sqrt(dhdx**2 + dhdy**2)
        feat(i, j, 4) = sqrt(cfg%gprime * max(s%h(i, j), cfg%hmin)) / f / sqrt(g%dx * g%dy)
      end do
    end do
  end subroutine compute_features
end module ocean_features
