!> run_script / run_model from Fortran (tests/test_fortran.py writes the two files):
!>   engine SCRIPT_FILE MODEL_FILE
!> SCRIPT_FILE defines add_scale(x, y) = 2x + y and row_sum(x) = x.sum(dim=1); MODEL_FILE is a
!> TorchScript module whose forward(x) = x @ W with W[j, k] = j + 10 k (0-based), W of shape (4, 2).
program engine
  use, intrinsic :: iso_fortran_env, only : real32
  use mpi_f08
  use mpistage
  implicit none
  type(client_type) :: client
  type(run_handle) :: h
  type(MPI_Comm) :: comm
  character(len=512) :: script_file, model_file
  character(len=32) :: x, y, z, s, m
  real(real32) :: a(3, 4), b(3, 4), out(3, 4), rows(3), w(4, 2), prod(3, 2)
  integer :: r, i, j, failures = 0, code
  logical :: exists

  call get_command_argument(1, script_file)
  call get_command_argument(2, model_file)
  call ok(client%initialize('engine'), 'initialize')
  comm = mpistage_comm()
  call MPI_Comm_rank(comm, r)
  if (r == 0) then
    call ok(client%set_script_from_file('fscript', 'CPU', trim(script_file)), 'set_script_from_file')
    call ok(client%set_model_from_file('fmodel', trim(model_file), 'TORCH', 'CPU'), 'set_model_from_file')
  end if
  call MPI_Barrier(comm)
  call ok(client%model_exists('fmodel', exists), 'model_exists')
  call expect(exists, 'the model exists')

  do j = 1, 4
    do i = 1, 3
      a(i, j) = real(i + 10 * j + r, real32)
      b(i, j) = real(100 * i - j, real32)
    end do
  end do
  do j = 1, 2
    do i = 1, 4
      w(i, j) = real((i - 1) + 10 * (j - 1), real32)
    end do
  end do
  write (x, '(a,i0)') 'eng.x.', r
  write (y, '(a,i0)') 'eng.y.', r
  write (z, '(a,i0)') 'eng.z.', r
  write (s, '(a,i0)') 'eng.rows.', r
  write (m, '(a,i0)') 'eng.prod.', r
  call ok(client%put_tensor(x, a, shape(a)), 'put x')
  call ok(client%put_tensor(y, b, shape(b)), 'put y')

  ! elementwise: z = 2 x + y
  call ok(client%run_script('fscript', 'add_scale', [x, y], [z]), 'run_script add_scale')
  out = 0
  call ok(client%unpack_tensor(z, out, shape(out)), 'unpack add_scale')
  call expect(all(out == 2 * a + b), 'add_scale values')

  ! the layout rule through torch: dim=1 of x is Fortran's second index
  call ok(client%run_script('fscript', 'row_sum', [x], [s]), 'run_script row_sum')
  rows = 0
  call ok(client%unpack_tensor(s, rows, shape(rows)), 'unpack row_sum')
  call expect(all(rows == sum(a, dim=2)), 'row_sum values')

  ! a model: x @ W, asynchronously
  call ok(client%run_model_async('fmodel', [x], [m], h), 'run_model_async')
  code = h%wait()
  call ok(code, 'wait for run_model_async')
  call expect(h%done(), 'done after wait')
  prod = 0
  call ok(client%unpack_tensor(m, prod, shape(prod)), 'unpack model output')
  call expect(all(prod == matmul(a, w)), 'model output == matmul(x, W)')
  call ok(client%run_model('fmodel', [x], [m]), 'run_model')

  ! errors come back as a status and a message
  code = client%run_model('no_such_model', [x], [m])
  call expect(code /= SRNoError .and. index(get_last_error(), 'no_such_model') > 0, &
       'run_model of a missing model: ' // get_last_error())
  code = client%run_script('fscript', 'no_such_function', [x], [z])
  call expect(code /= SRNoError .and. len(get_last_error()) > 0, 'missing function: ' // get_last_error())
  code = client%run_script('fscript', 'row_sum', ['no_such_input'], [z])
  call expect(code /= SRNoError .and. index(get_last_error(), 'no_such_input') > 0, &
       'missing input: ' // get_last_error())

  if (r == 0) call all_or_nothing()

  call MPI_Barrier(comm)
  if (r == 0) then
    call ok(client%delete_model('fmodel'), 'delete_model')
    call ok(client%model_exists('fmodel', exists), 'model_exists after delete')
    call expect(.not. exists, 'the model is gone')
  end if
  print '(a,i0,a,i0,a)', 'E', r, ' engine: ', failures, ' failures'
  if (failures > 0) call MPI_Abort(MPI_COMM_WORLD, 3)

contains
  !> set_model is all or nothing: bytes that are not TorchScript leave the name on no shard (a
  !> run on an input of each shard says so); the same name with a real model then runs on each.
  subroutine all_or_nothing()
    character(len=:), allocatable :: good
    character(len=32), allocatable :: keys(:)
    integer :: u, sz, sh, k
    code = client%set_model('fbad', 'these bytes are not a TorchScript archive', 'TORCH', 'CPU')
    call expect(code /= SRNoError .and. index(get_last_error(), 'fbad') > 0, &
         'set_model of bytes that are not TorchScript: ' // get_last_error())
    call ok(client%model_exists('fbad', exists), 'model_exists after a failed set_model')
    call expect(.not. exists, 'no model after a failed set_model')
    allocate(keys(0:client%get_num_shards() - 1))
    k = 0
    do sh = 0, size(keys) - 1
      do
        write (keys(sh), '(a,i0)') 'eng.onshard.', k
        k = k + 1
        if (mpistage_shard_of(trim(keys(sh)), size(keys)) == sh) exit
      end do
      call ok(client%put_tensor(trim(keys(sh)), a, shape(a)), 'put an input on shard: ' // trim(keys(sh)))
      code = client%run_model('fbad', [trim(keys(sh))], ['eng.onshard.out'])
      call expect(code /= SRNoError .and. index(get_last_error(), 'fbad') > 0, &
           'the refused model is on no shard: ' // get_last_error())
    end do
    open (newunit=u, file=trim(model_file), access='stream', form='unformatted', status='old', action='read')
    inquire (unit=u, size=sz)
    allocate(character(len=sz) :: good)
    read (u) good
    close (u)
    call ok(client%set_model('fbad', good, 'TORCH', 'CPU'), 'set_model of TorchScript bytes')
    do sh = 0, size(keys) - 1
      call ok(client%run_model('fbad', [trim(keys(sh))], ['eng.onshard.out']), 'run it on ' // trim(keys(sh)))
      prod = 0
      call ok(client%unpack_tensor('eng.onshard.out', prod, shape(prod)), 'unpack its output')
      call expect(all(prod == matmul(a, w)), 'set_model output on shard of ' // trim(keys(sh)) // ' == matmul(x, W)')
    end do
    call ok(client%delete_model('fbad'), 'delete_model after set_model')
  end subroutine

  subroutine ok(c, what)
    integer, intent(in) :: c
    character(len=*), intent(in) :: what
    if (c /= SRNoError) then
      failures = failures + 1
      print '(a,i0,a)', 'FAIL: ' // what // ' returned ', c, ': ' // get_last_error()
    end if
  end subroutine
  subroutine expect(cond, what)
    logical, intent(in) :: cond
    character(len=*), intent(in) :: what
    if (.not. cond) then
      failures = failures + 1
      print '(a)', 'FAIL: ' // what
    else
      print '(a)', 'ok: ' // what
    end if
  end subroutine
end program engine
