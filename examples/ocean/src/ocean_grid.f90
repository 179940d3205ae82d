!> The C-grid and its 2-D block decomposition over the application communicator.
!>
!> Global cells are (1..nx, 1..ny), cell (i, j) centred at x = (i - 1/2) dx, y = (j - 1/2) dy.
!> Every field of a block is stored as a(0:nxl+1, 0:nyl+1), one halo cell around the owned
!> cells (1..nxl, 1..nyl):
!>   h(i, j)  thickness at the centre of cell (i, j)
!>   u(i, j)  zonal velocity on the WEST face of cell (i, j)      (global u faces 1..nx+1)
!>   v(i, j)  meridional velocity on the SOUTH face of cell (i, j) (global v faces 1..ny+1)
!>   q(i, j)  potential vorticity at the SOUTH-WEST corner of cell (i, j)
!> so the east face of the last block (global u face nx+1, a wall) is its halo column nxl+1.
module ocean_grid
  use mpi_f08
  use ocean_config, only : dp, config_t
  implicit none
  private
  public :: grid_init, block_extent

  type, public :: grid_t
    type(MPI_Comm) :: comm                 ! Cartesian communicator of the blocks
    integer :: rank = 0, nranks = 1
    integer :: dims(2) = 1, coords(2) = 0
    integer :: west = MPI_PROC_NULL, east = MPI_PROC_NULL      ! neighbour ranks (MPI_PROC_NULL at walls)
    integer :: south = MPI_PROC_NULL, north = MPI_PROC_NULL
    integer :: nx = 0, ny = 0              ! global cells
    integer :: nxl = 0, nyl = 0            ! cells of this block
    integer :: i0 = 0, j0 = 0              ! global index = i0 + local index
    real(dp) :: dx = 0, dy = 0
    logical :: at_west = .true., at_east = .true., at_south = .true., at_north = .true.
  end type grid_t

contains

  !> Decompose the cfg%nx x cfg%ny cells over `comm` in blocks (cfg%px x cfg%py, or MPI_Dims_create).
  subroutine grid_init(g, cfg, comm)
    type(grid_t), intent(out) :: g
    type(config_t), intent(in) :: cfg
    type(MPI_Comm), intent(in) :: comm
    type(MPI_Comm) :: cart
    integer :: nranks, w, e, s, n

    call MPI_Comm_size(comm, nranks)
    g%dims = [cfg%px, cfg%py]
    if (product(max(g%dims, 1)) /= nranks .and. all(g%dims > 0)) then
      error stop 'ocean: px * py must equal the number of ranks'
    end if
    call MPI_Dims_create(nranks, 2, g%dims)
    if (cfg%nx < g%dims(1) .or. cfg%ny < g%dims(2)) error stop 'ocean: more blocks than cells'
    call MPI_Cart_create(comm, 2, g%dims, [.false., .false.], .false., cart)
    g%comm = cart
    call MPI_Comm_rank(cart, g%rank)
    g%nranks = nranks
    call MPI_Cart_coords(cart, g%rank, 2, g%coords)
    call MPI_Cart_shift(cart, 0, 1, w, e)
    call MPI_Cart_shift(cart, 1, 1, s, n)
    g%west = w; g%east = e; g%south = s; g%north = n
    g%at_west = g%coords(1) == 0
    g%at_east = g%coords(1) == g%dims(1) - 1
    g%at_south = g%coords(2) == 0
    g%at_north = g%coords(2) == g%dims(2) - 1
    g%nx = cfg%nx; g%ny = cfg%ny
    g%dx = cfg%lx / cfg%nx; g%dy = cfg%ly / cfg%ny
    call block_extent(g, g%coords, g%i0, g%j0, g%nxl, g%nyl)
  end subroutine grid_init

  !> Offset (i0, j0) and size (nxl, nyl) of the block at Cartesian `coords`: n / p cells each,
  !> the first mod(n, p) blocks one more.
  pure subroutine block_extent(g, coords, i0, j0, nxl, nyl)
    type(grid_t), intent(in) :: g
    integer, intent(in) :: coords(2)
    integer, intent(out) :: i0, j0, nxl, nyl
    call split(g%nx, g%dims(1), coords(1), i0, nxl)
    call split(g%ny, g%dims(2), coords(2), j0, nyl)
  end subroutine block_extent

  pure subroutine split(n, p, c, offset, size)
    integer, intent(in) :: n, p, c
    integer, intent(out) :: offset, size
    size = n / p + merge(1, 0, c < mod(n, p))
    offset = c * (n / p) + min(c, mod(n, p))
  end subroutine split
end module ocean_grid
