!> An ONNX model from Fortran (tests/test_onnx_runtime.py writes MODEL_FILE):  onnx_fortran MODEL_FILE
!> The model takes x (n, 4) and b (n, 2) and returns p = x @ W and q = p - b, W[j, k] = j + 10 k
!> (0-based): inputs and outputs are bound in the model's declared order.
program onnx_fortran
  use, intrinsic :: iso_fortran_env, only : real32
  use mpi_f08
  use mpistage
  implicit none
  type(client_type) :: client
  character(len=512) :: model_file
  real(real32) :: a(3, 4), b(3, 2), w(4, 2), p(3, 2), q(3, 2)
  integer :: i, j, failures = 0, code

  call get_command_argument(1, model_file)
  call ok(client%initialize('onnx_fortran'), 'initialize')
  call ok(client%set_model_from_file('fonnx', trim(model_file), 'ONNX', 'CPU'), 'set_model_from_file ONNX')
  do j = 1, 4
    do i = 1, 3
      a(i, j) = real(i + 10 * j, real32)
    end do
  end do
  do j = 1, 2
    do i = 1, 3
      b(i, j) = real(100 * i - j, real32)
    end do
    do i = 1, 4
      w(i, j) = real((i - 1) + 10 * (j - 1), real32)
    end do
  end do
  call ok(client%put_tensor('fx', a, shape(a)), 'put x')
  call ok(client%put_tensor('fb', b, shape(b)), 'put b')
  call ok(client%run_model('fonnx', ['fx', 'fb'], ['fp', 'fq']), 'run_model ONNX')
  p = 0
  q = 0
  call ok(client%unpack_tensor('fp', p, shape(p)), 'unpack p')
  call ok(client%unpack_tensor('fq', q, shape(q)), 'unpack q')
  call expect(all(p == matmul(a, w)), 'ONNX output p == matmul(x, W)')
  call expect(all(q == matmul(a, w) - b), 'ONNX output q == p - b')
  code = client%set_model('fbad', 'not an onnx model', 'ONNX', 'CPU')
  call expect(code /= SRNoError .and. index(get_last_error(), 'not an ONNX model') > 0, &
       'set_model of bytes that are not ONNX: ' // get_last_error())
  print '(a,i0,a)', 'onnx_fortran: ', failures, ' failures'
  if (failures > 0) call MPI_Abort(MPI_COMM_WORLD, 3)

contains
  subroutine ok(c, what)
    integer(enum_kind), intent(in) :: c
    character(len=*), intent(in) :: what
    if (c /= SRNoError) then
      failures = failures + 1
      print '(a)', 'FAIL: ' // what // ': ' // get_last_error()
    end if
  end subroutine

  subroutine expect(cond, what)
    logical, intent(in) :: cond
    character(len=*), intent(in) :: what
    if (cond) then
      print '(a)', 'ok: ' // what
    else
      failures = failures + 1
      print '(a)', 'FAIL: ' // what
    end if
  end subroutine
end program
