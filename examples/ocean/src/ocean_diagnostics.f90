!> Basin-wide diagnostics once per model day and the blow-up check.
module ocean_diagnostics
  use mpi_f08
  use ocean_config, only : dp, config_t
  use ocean_grid, only : grid_t
  use ocean_dynamics, only : state_t
  use ocean_closure, only : closure_t
  implicit none
  private
  public :: diagnose, diag_header, diag_line, healthy

  !> ke: basin mean of (mean_x(u^2) + mean_y(v^2)) / 2 (m^2/s^2); mass: sum of h dx dy (m^3);
  !> kappa_mean, e_mean: basin means of kappa and of E (MEKE energy or the network's EKE).
  type, public :: diag_t
    real(dp) :: ke = 0, hmin = 0, hmax = 0, umax = 0, mass = 0, kappa_mean = 0, e_mean = 0
  end type diag_t

contains

  subroutine diagnose(g, s, c, dg)
    type(grid_t), intent(in) :: g
    type(state_t), intent(in) :: s
    type(closure_t), intent(in) :: c
    type(diag_t), intent(out) :: dg
    real(dp) :: sums(4), ext(3)
    integer :: nxl, nyl

    nxl = g%nxl; nyl = g%nyl
    associate (u => s%u(1:nxl + 1, 1:nyl), v => s%v(1:nxl, 1:nyl + 1), h => s%h(1:nxl, 1:nyl))
      sums(1) = 0.25_dp * (sum(u(1:nxl, :)**2) + sum(u(2:nxl + 1, :)**2) + sum(v(:, 1:nyl)**2) + sum(v(:, 2:nyl + 1)**2))
      sums(2) = sum(h)
      ext = [-minval(h), maxval(h), max(maxval(abs(u)), maxval(abs(v)))]
    end associate
    sums(3) = sum(c%kappa(1:nxl, 1:nyl))
    sums(4) = sum(c%e(1:nxl, 1:nyl))
    call MPI_Allreduce(MPI_IN_PLACE, sums, 4, MPI_DOUBLE_PRECISION, MPI_SUM, g%comm)
    call MPI_Allreduce(MPI_IN_PLACE, ext, 3, MPI_DOUBLE_PRECISION, MPI_MAX, g%comm)
    dg%ke = sums(1) / (g%nx * g%ny)
    dg%mass = sums(2) * g%dx * g%dy
    dg%kappa_mean = sums(3) / (g%nx * g%ny)
    dg%e_mean = sums(4) / (g%nx * g%ny)
    dg%hmin = -ext(1); dg%hmax = ext(2); dg%umax = ext(3)
  end subroutine diagnose

  !> False when the run has blown up: NaN, h at the floor, or speeds of 10 m/s.
  logical function healthy(cfg, dg)
    type(config_t), intent(in) :: cfg
    type(diag_t), intent(in) :: dg
    healthy = .not. (ieee_bad(dg%ke) .or. ieee_bad(dg%mass) .or. ieee_bad(dg%umax) &
                     .or. dg%hmin <= cfg%hmin .or. dg%umax > 10)
  end function healthy

  character(len=120) function diag_header()
    diag_header = '# day ke_m2s2 hmin_m hmax_m umax_ms mass_m3 kappa_mean_m2s e_mean_m2s2'
  end function diag_header

  character(len=200) function diag_line(day, dg)
    real(dp), intent(in) :: day
    type(diag_t), intent(in) :: dg
    write (diag_line, '(f10.2, 7es24.15)') day, dg%ke, dg%hmin, dg%hmax, dg%umax, dg%mass, dg%kappa_mean, dg%e_mean
  end function diag_line

  logical function ieee_bad(x)
    use, intrinsic :: ieee_arithmetic, only : ieee_is_finite
    real(dp), intent(in) :: x
    ieee_bad = .not. ieee_is_finite(x)
  end function ieee_bad
end module ocean_diagnostics
