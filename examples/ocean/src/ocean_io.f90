!> State, features and diagnostics files of the ocean model.
!>
!> A state file (restart in and out, snapshots) is one stream of native little-endian bytes:
!>   8 bytes 'OCEANSW1', int32 nx, int32 ny, real64 model day,
!>   then real64 arrays in Fortran order: u(nx+1, ny), v(nx, ny+1), h(nx, ny), E(nx, ny), kappa(nx, ny)
!> (u and v on every face, walls included; E is the MEKE energy, or the last EKE of closure = ml).
!> A features file: 8 bytes 'OCEANFT1', int32 nx, int32 ny, real64 model day, real64 f(nx, ny, 4).
!> Rank 0 gathers the blocks and writes; for reading it reads and broadcasts the whole basin.
!> examples/ocean/state.py reads both.
module ocean_io
  use, intrinsic :: iso_fortran_env, only : int32, error_unit
  use mpi_f08
  use ocean_config, only : dp
  use ocean_grid, only : grid_t, block_extent
  use ocean_halo, only : halo_exchange, CELL
  use ocean_dynamics, only : state_t
  use ocean_closure, only : closure_t
  implicit none
  private
  public :: write_state, read_state, write_features

  character(len=8), parameter :: STATE_MAGIC = 'OCEANSW1', FEATURES_MAGIC = 'OCEANFT1'

contains

  !> Write the whole basin's state at model `day` to `path` (collective).
  subroutine write_state(g, path, s, c, day)
    type(grid_t), intent(in) :: g
    character(len=*), intent(in) :: path
    type(state_t), intent(in) :: s
    type(closure_t), intent(in) :: c
    real(dp), intent(in) :: day
    real(dp), allocatable :: u(:, :), v(:, :), h(:, :), e(:, :), k(:, :)
    integer :: unit

    allocate (u(g%nx + 1, g%ny), v(g%nx, g%ny + 1), h(g%nx, g%ny), e(g%nx, g%ny), k(g%nx, g%ny))
    u = 0; v = 0
    call gather(g, s%u, u(1:g%nx, :))
    call gather(g, s%v, v(:, 1:g%ny))
    call gather(g, s%h, h)
    call gather(g, c%e, e)
    call gather(g, c%kappa, k)
    if (g%rank == 0) then
      call open_out(path, unit)
      write (unit) STATE_MAGIC, int(g%nx, int32), int(g%ny, int32), day, u, v, h, e, k
      close (unit)
    end if
  end subroutine write_state

  !> Read `path` into this block's state and closure fields; returns its model day (collective).
  subroutine read_state(g, path, s, c, day)
    type(grid_t), intent(in) :: g
    character(len=*), intent(in) :: path
    type(state_t), intent(inout) :: s
    type(closure_t), intent(inout) :: c
    real(dp), intent(out) :: day
    real(dp), allocatable :: u(:, :), v(:, :), h(:, :), e(:, :), k(:, :)
    character(len=8) :: magic
    integer(int32) :: dims(2)
    integer :: unit, ios
    character(len=256) :: msg

    allocate (u(g%nx + 1, g%ny), v(g%nx, g%ny + 1), h(g%nx, g%ny), e(g%nx, g%ny), k(g%nx, g%ny))
    ios = 0; msg = ''
    if (g%rank == 0) then
      open (newunit=unit, file=path, access='stream', form='unformatted', status='old', action='read', &
            iostat=ios, iomsg=msg)
      if (ios == 0) read (unit, iostat=ios, iomsg=msg) magic, dims
      if (ios == 0 .and. magic /= STATE_MAGIC) then
        ios = 1; msg = 'not an ocean state file'
      else if (ios == 0 .and. any(dims /= [g%nx, g%ny])) then
        ios = 1; write (msg, '(a,2i6,a,2i6)') 'grid', dims, ' in the file, namelist says', g%nx, g%ny
      end if
      if (ios == 0) read (unit, iostat=ios, iomsg=msg) day, u, v, h, e, k
      if (ios == 0) close (unit)
    end if
    call MPI_Bcast(ios, 1, MPI_INTEGER, 0, g%comm)
    if (ios /= 0) then
      if (g%rank == 0) write (error_unit, '(a)') 'ocean: restart ' // trim(path) // ': ' // trim(msg)
      call MPI_Abort(g%comm, 2)
    end if
    call MPI_Bcast(day, 1, MPI_DOUBLE_PRECISION, 0, g%comm)
    call MPI_Bcast(u, size(u), MPI_DOUBLE_PRECISION, 0, g%comm)
    call MPI_Bcast(v, size(v), MPI_DOUBLE_PRECISION, 0, g%comm)
    call MPI_Bcast(h, size(h), MPI_DOUBLE_PRECISION, 0, g%comm)
    call MPI_Bcast(e, size(e), MPI_DOUBLE_PRECISION, 0, g%comm)
    call MPI_Bcast(k, size(k), MPI_DOUBLE_PRECISION, 0, g%comm)
    call scatter(g, u, s%u)
    call scatter(g, v, s%v)
    call scatter(g, h, s%h)
    call scatter(g, e, c%e)
    call scatter(g, k, c%kappa)
    call halo_exchange(g, c%kappa, CELL)
  end subroutine read_state

  !> Write the features feat(nxl, nyl, nf) of every block as f(nx, ny, nf) (collective).
  subroutine write_features(g, path, feat, day)
    type(grid_t), intent(in) :: g
    character(len=*), intent(in) :: path
    real(dp), intent(in) :: feat(:, :, :)
    real(dp), intent(in) :: day
    real(dp), allocatable :: f(:, :, :), block(:, :)
    integer :: n, unit

    allocate (f(g%nx, g%ny, size(feat, 3)), block(0:g%nxl + 1, 0:g%nyl + 1))
    do n = 1, size(feat, 3)
      block(1:g%nxl, 1:g%nyl) = feat(:, :, n)
      call gather(g, block, f(:, :, n))
    end do
    if (g%rank == 0) then
      call open_out(path, unit)
      write (unit) FEATURES_MAGIC, int(g%nx, int32), int(g%ny, int32), day, f
      close (unit)
    end if
  end subroutine write_features

  !> glob(1:nx, 1:ny) on rank 0 = the owned cells a(1:nxl, 1:nyl) of every block.
  subroutine gather(g, a, glob)
    type(grid_t), intent(in) :: g
    real(dp), intent(in) :: a(0:, 0:)
    real(dp), intent(inout) :: glob(:, :)
    real(dp), allocatable :: buf(:, :)
    integer :: r, coords(2), i0, j0, nxl, nyl

    if (g%rank /= 0) then
      buf = a(1:g%nxl, 1:g%nyl)
      call MPI_Send(buf, size(buf), MPI_DOUBLE_PRECISION, 0, 71, g%comm)
      return
    end if
    glob(g%i0 + 1:g%i0 + g%nxl, g%j0 + 1:g%j0 + g%nyl) = a(1:g%nxl, 1:g%nyl)
    do r = 1, g%nranks - 1
      call MPI_Cart_coords(g%comm, r, 2, coords)
      call block_extent(g, coords, i0, j0, nxl, nyl)
      if (allocated(buf)) deallocate (buf)
      allocate (buf(nxl, nyl))
      call MPI_Recv(buf, size(buf), MPI_DOUBLE_PRECISION, r, 71, g%comm, MPI_STATUS_IGNORE)
      glob(i0 + 1:i0 + nxl, j0 + 1:j0 + nyl) = buf
    end do
  end subroutine gather

  !> a(1:nxl, 1:nyl) = this block's part of the whole-basin glob (faces: its west/south faces).
  subroutine scatter(g, glob, a)
    type(grid_t), intent(in) :: g
    real(dp), intent(in) :: glob(:, :)
    real(dp), intent(inout) :: a(0:, 0:)
    a(1:g%nxl, 1:g%nyl) = glob(g%i0 + 1:g%i0 + g%nxl, g%j0 + 1:g%j0 + g%nyl)
  end subroutine scatter

  subroutine open_out(path, unit)
    character(len=*), intent(in) :: path
    integer, intent(out) :: unit
    integer :: ios
    character(len=256) :: msg
    open (newunit=unit, file=path, access='stream', form='unformatted', status='replace', action='write', &
          iostat=ios, iomsg=msg)
    if (ios /= 0) then
      write (error_unit, '(a)') 'ocean: cannot write ' // trim(path) // ': ' // trim(msg)
      call MPI_Abort(MPI_COMM_WORLD, 2)
    end if
  end subroutine open_out
end module ocean_io
