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

  call MPI_Barrier(comm)
  if (r == 0) then
    call ok(client%delete_model('fmodel'), 'delete_model')
    call ok(client%model_exists('fmodel', exists), 'model_exists after delete')
    call expect(.not. exists, 'the model is gone')
  end if
  print '(a,i0,a,i0,a)', 'E', r, ' engine: ', failures, ' failures'
  if (failures > 0) call MPI_Abort(MPI_COMM_WORLD, 3)

contains
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
