!> One-cell halo exchange between neighbouring blocks, with the wall conditions of the closed basin.
!>
!> Two phases: east-west on the owned rows, then north-south on whole rows (halo columns
!> included), so the corner halo cells are filled too. Where a block touches a wall its halo
!> holds ghost values instead:
!>   CELL   (h, kappa, E, ...)  zero normal gradient: ghost = interior (no flux through walls)
!>   UFACE  (u, lap u)          normal at east/west walls: u = 0 on the wall face;
!>                              tangential at south/north walls, no slip: ghost = -interior
!>   VFACE  (v, lap v)          normal at south/north walls: v = 0; no slip at east/west: ghost = -interior
module ocean_halo
  use mpi_f08
  use ocean_config, only : dp
  use ocean_grid, only : grid_t
  implicit none
  private
  public :: halo_exchange

  integer, parameter, public :: CELL = 0, UFACE = 1, VFACE = 2

contains

  !> Fill the halo of a(0:nxl+1, 0:nyl+1) from the neighbours, ghost values at walls.
  subroutine halo_exchange(g, a, kind)
    type(grid_t), intent(in) :: g
    real(dp), intent(inout) :: a(0:, 0:)
    integer, intent(in) :: kind
    integer :: nxl, nyl
    real(dp) :: sbuf(g%nyl), rbuf(g%nyl)

    nxl = g%nxl; nyl = g%nyl
    ! east-west, owned rows 1..nyl
    sbuf = a(nxl, 1:nyl)
    call MPI_Sendrecv(sbuf, nyl, MPI_DOUBLE_PRECISION, g%east, 1, rbuf, nyl, MPI_DOUBLE_PRECISION, &
         g%west, 1, g%comm, MPI_STATUS_IGNORE)
    if (.not. g%at_west) a(0, 1:nyl) = rbuf
    sbuf = a(1, 1:nyl)
    call MPI_Sendrecv(sbuf, nyl, MPI_DOUBLE_PRECISION, g%west, 2, rbuf, nyl, MPI_DOUBLE_PRECISION, &
         g%east, 2, g%comm, MPI_STATUS_IGNORE)
    if (.not. g%at_east) a(nxl + 1, 1:nyl) = rbuf
    if (g%at_west) then
      select case (kind)
      case (CELL); a(0, 1:nyl) = a(1, 1:nyl)
      case (UFACE); a(0:1, 1:nyl) = 0
      case (VFACE); a(0, 1:nyl) = -a(1, 1:nyl)
      end select
    end if
    if (g%at_east) then
      select case (kind)
      case (CELL); a(nxl + 1, 1:nyl) = a(nxl, 1:nyl)
      case (UFACE); a(nxl + 1, 1:nyl) = 0
      case (VFACE); a(nxl + 1, 1:nyl) = -a(nxl, 1:nyl)
      end select
    end if
    ! north-south, whole rows 0..nxl+1 (contiguous in memory)
    call MPI_Sendrecv(a(:, nyl), nxl + 2, MPI_DOUBLE_PRECISION, g%north, 3, a(:, 0), nxl + 2, &
         MPI_DOUBLE_PRECISION, g%south, 3, g%comm, MPI_STATUS_IGNORE)
    call MPI_Sendrecv(a(:, 1), nxl + 2, MPI_DOUBLE_PRECISION, g%south, 4, a(:, nyl + 1), nxl + 2, &
         MPI_DOUBLE_PRECISION, g%north, 4, g%comm, MPI_STATUS_IGNORE)
    if (g%at_south) then
      select case (kind)
      case (CELL); a(:, 0) = a(:, 1)
      case (UFACE); a(:, 0) = -a(:, 1)
      case (VFACE); a(:, 0:1) = 0
      end select
    end if
    if (g%at_north) then
      select case (kind)
      case (CELL); a(:, nyl + 1) = a(:, nyl)
      case (UFACE); a(:, nyl + 1) = -a(:, nyl)
      case (VFACE); a(:, nyl + 1) = 0
      end select
    end if
  end subroutine halo_exchange
end module ocean_halo
