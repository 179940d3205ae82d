!> A SmartRedis Fortran program built against mpistage: it uses only SmartRedis's modules and
!> enum_fortran.inc (plus, for the MPMD one-line change, mpistage_comm_int). Puts and unpacks
!> every type at ranks 1-4, datasets, lists, models (get_model, get_script too), error codes and
!> get_last_error; prints "SMARTREDIS FORTRAN OK <rank>". Args: a TorchScript model file (y = x + 1), the log file.
program smartredis_program
  use mpi_f08
  use, intrinsic :: iso_fortran_env, only : int8, int16, int32, int64, real32, real64
  use smartredis_client, only : client_type
  use smartredis_dataset, only : dataset_type
  use smartredis_configoptions, only : configoptions_type
  use smartredis_errors, only : get_last_error, print_last_error
  use smartredis_logger, only : log_data
  use smartredis_logcontext, only : logcontext_type
  use mpistage, only : mpistage_comm_int
  implicit none

#include "enum_fortran.inc"

  type(client_type) :: client
  type(dataset_type) :: ds, back
  type(dataset_type), allocatable :: got(:)
  type(configoptions_type) :: opts
  type(logcontext_type) :: context
  character(len=256) :: model_file
  character(len=16) :: rank_text
  character(len=:), allocatable :: text
  integer :: rank, i, comm, ierr, dims(4), ndims
  integer(kind=4) :: ttype
  logical :: exists
  real(real64) :: x(3, 2), y(3, 2)
  real(real64), pointer :: steps(:)
  integer :: code

  call MPI_Init()
  comm = mpistage_comm_int()  ! was: comm = MPI_COMM_WORLD (MPMD: the world holds the servers)
  call MPI_Comm_rank(MPI_Comm(comm), rank)
  write (rank_text, '(i0)') rank
  call get_command_argument(1, model_file)

  call check(opts%create_configoptions_from_environment(''), 'create_configoptions_from_environment')
  call check(client%initialize(opts, 'fortran_sr'), 'initialize(cfgopts)')
  call expect(client%isinitialized(), 'isinitialized')
  call check(context%initialize('ctx' // trim(rank_text)), 'logcontext initialize')
  call log_data(LLInfo, 'smartredis program rank ' // trim(rank_text))
  call context%log_data(LLInfo, 'from the log context')
  call context%log_data(LLDebug, 'not written at INFO')

    block
      real(real32) :: a(24), b(24)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('r4_1'), a, shape(a)), 'put_tensor r4 rank 1')
      call check(client%unpack_tensor(key('r4_1'), b, shape(b)), 'unpack_tensor r4 rank 1')
      call expect(all(a == b), 'r4 rank 1 round trip')
    end block
    block
      real(real32) :: a(4, 6), b(4, 6)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('r4_2'), a, shape(a)), 'put_tensor r4 rank 2')
      call check(client%unpack_tensor(key('r4_2'), b, shape(b)), 'unpack_tensor r4 rank 2')
      call expect(all(a == b), 'r4 rank 2 round trip')
    end block
    block
      real(real32) :: a(2, 3, 4), b(2, 3, 4)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('r4_3'), a, shape(a)), 'put_tensor r4 rank 3')
      call check(client%unpack_tensor(key('r4_3'), b, shape(b)), 'unpack_tensor r4 rank 3')
      call expect(all(a == b), 'r4 rank 3 round trip')
    end block
    block
      real(real32) :: a(2, 3, 2, 2), b(2, 3, 2, 2)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('r4_4'), a, shape(a)), 'put_tensor r4 rank 4')
      call check(client%unpack_tensor(key('r4_4'), b, shape(b)), 'unpack_tensor r4 rank 4')
      call expect(all(a == b), 'r4 rank 4 round trip')
    end block
    block
      real(real64) :: a(24), b(24)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('r8_1'), a, shape(a)), 'put_tensor r8 rank 1')
      call check(client%unpack_tensor(key('r8_1'), b, shape(b)), 'unpack_tensor r8 rank 1')
      call expect(all(a == b), 'r8 rank 1 round trip')
    end block
    block
      real(real64) :: a(4, 6), b(4, 6)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('r8_2'), a, shape(a)), 'put_tensor r8 rank 2')
      call check(client%unpack_tensor(key('r8_2'), b, shape(b)), 'unpack_tensor r8 rank 2')
      call expect(all(a == b), 'r8 rank 2 round trip')
    end block
    block
      real(real64) :: a(2, 3, 4), b(2, 3, 4)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('r8_3'), a, shape(a)), 'put_tensor r8 rank 3')
      call check(client%unpack_tensor(key('r8_3'), b, shape(b)), 'unpack_tensor r8 rank 3')
      call expect(all(a == b), 'r8 rank 3 round trip')
    end block
    block
      real(real64) :: a(2, 3, 2, 2), b(2, 3, 2, 2)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('r8_4'), a, shape(a)), 'put_tensor r8 rank 4')
      call check(client%unpack_tensor(key('r8_4'), b, shape(b)), 'unpack_tensor r8 rank 4')
      call expect(all(a == b), 'r8 rank 4 round trip')
    end block
    block
      integer(int8) :: a(24), b(24)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i1_1'), a, shape(a)), 'put_tensor i1 rank 1')
      call check(client%unpack_tensor(key('i1_1'), b, shape(b)), 'unpack_tensor i1 rank 1')
      call expect(all(a == b), 'i1 rank 1 round trip')
    end block
    block
      integer(int8) :: a(4, 6), b(4, 6)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i1_2'), a, shape(a)), 'put_tensor i1 rank 2')
      call check(client%unpack_tensor(key('i1_2'), b, shape(b)), 'unpack_tensor i1 rank 2')
      call expect(all(a == b), 'i1 rank 2 round trip')
    end block
    block
      integer(int8) :: a(2, 3, 4), b(2, 3, 4)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i1_3'), a, shape(a)), 'put_tensor i1 rank 3')
      call check(client%unpack_tensor(key('i1_3'), b, shape(b)), 'unpack_tensor i1 rank 3')
      call expect(all(a == b), 'i1 rank 3 round trip')
    end block
    block
      integer(int8) :: a(2, 3, 2, 2), b(2, 3, 2, 2)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i1_4'), a, shape(a)), 'put_tensor i1 rank 4')
      call check(client%unpack_tensor(key('i1_4'), b, shape(b)), 'unpack_tensor i1 rank 4')
      call expect(all(a == b), 'i1 rank 4 round trip')
    end block
    block
      integer(int16) :: a(24), b(24)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i2_1'), a, shape(a)), 'put_tensor i2 rank 1')
      call check(client%unpack_tensor(key('i2_1'), b, shape(b)), 'unpack_tensor i2 rank 1')
      call expect(all(a == b), 'i2 rank 1 round trip')
    end block
    block
      integer(int16) :: a(4, 6), b(4, 6)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i2_2'), a, shape(a)), 'put_tensor i2 rank 2')
      call check(client%unpack_tensor(key('i2_2'), b, shape(b)), 'unpack_tensor i2 rank 2')
      call expect(all(a == b), 'i2 rank 2 round trip')
    end block
    block
      integer(int16) :: a(2, 3, 4), b(2, 3, 4)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i2_3'), a, shape(a)), 'put_tensor i2 rank 3')
      call check(client%unpack_tensor(key('i2_3'), b, shape(b)), 'unpack_tensor i2 rank 3')
      call expect(all(a == b), 'i2 rank 3 round trip')
    end block
    block
      integer(int16) :: a(2, 3, 2, 2), b(2, 3, 2, 2)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i2_4'), a, shape(a)), 'put_tensor i2 rank 4')
      call check(client%unpack_tensor(key('i2_4'), b, shape(b)), 'unpack_tensor i2 rank 4')
      call expect(all(a == b), 'i2 rank 4 round trip')
    end block
    block
      integer(int32) :: a(24), b(24)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i4_1'), a, shape(a)), 'put_tensor i4 rank 1')
      call check(client%unpack_tensor(key('i4_1'), b, shape(b)), 'unpack_tensor i4 rank 1')
      call expect(all(a == b), 'i4 rank 1 round trip')
    end block
    block
      integer(int32) :: a(4, 6), b(4, 6)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i4_2'), a, shape(a)), 'put_tensor i4 rank 2')
      call check(client%unpack_tensor(key('i4_2'), b, shape(b)), 'unpack_tensor i4 rank 2')
      call expect(all(a == b), 'i4 rank 2 round trip')
    end block
    block
      integer(int32) :: a(2, 3, 4), b(2, 3, 4)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i4_3'), a, shape(a)), 'put_tensor i4 rank 3')
      call check(client%unpack_tensor(key('i4_3'), b, shape(b)), 'unpack_tensor i4 rank 3')
      call expect(all(a == b), 'i4 rank 3 round trip')
    end block
    block
      integer(int32) :: a(2, 3, 2, 2), b(2, 3, 2, 2)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i4_4'), a, shape(a)), 'put_tensor i4 rank 4')
      call check(client%unpack_tensor(key('i4_4'), b, shape(b)), 'unpack_tensor i4 rank 4')
      call expect(all(a == b), 'i4 rank 4 round trip')
    end block
    block
      integer(int64) :: a(24), b(24)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i8_1'), a, shape(a)), 'put_tensor i8 rank 1')
      call check(client%unpack_tensor(key('i8_1'), b, shape(b)), 'unpack_tensor i8 rank 1')
      call expect(all(a == b), 'i8 rank 1 round trip')
    end block
    block
      integer(int64) :: a(4, 6), b(4, 6)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i8_2'), a, shape(a)), 'put_tensor i8 rank 2')
      call check(client%unpack_tensor(key('i8_2'), b, shape(b)), 'unpack_tensor i8 rank 2')
      call expect(all(a == b), 'i8 rank 2 round trip')
    end block
    block
      integer(int64) :: a(2, 3, 4), b(2, 3, 4)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i8_3'), a, shape(a)), 'put_tensor i8 rank 3')
      call check(client%unpack_tensor(key('i8_3'), b, shape(b)), 'unpack_tensor i8 rank 3')
      call expect(all(a == b), 'i8 rank 3 round trip')
    end block
    block
      integer(int64) :: a(2, 3, 2, 2), b(2, 3, 2, 2)
      a = reshape([(int(i, int8), i = 1, 24)], shape(a))
      call check(client%put_tensor(key('i8_4'), a, shape(a)), 'put_tensor i8 rank 4')
      call check(client%unpack_tensor(key('i8_4'), b, shape(b)), 'unpack_tensor i8 rank 4')
      call expect(all(a == b), 'i8 rank 4 round trip')
    end block

    ! datasets and aggregation lists
    call check(ds%initialize(key('ds')), 'dataset initialize')
    x = reshape([(real(i, real64), i = 1, 6)], shape(x))
    call check(ds%add_tensor('x', x, shape(x)), 'add_tensor')
    call check(ds%add_meta_scalar('step', 7.5_real64), 'add_meta_scalar')
    call check(ds%add_meta_scalar('step', 8.5_real64), 'add_meta_scalar again')
    call check(ds%add_meta_string('units', 'm/s'), 'add_meta_string')
    call check(client%put_dataset(ds), 'put_dataset')
    call check(client%get_dataset(key('ds'), back), 'get_dataset')
    call check(back%unpack_dataset_tensor('x', y, shape(y)), 'unpack_dataset_tensor')
    call expect(all(x == y), 'dataset tensor round trip')
    call check(back%get_tensor_type('x', ttype), 'get_tensor_type')
    call expect(ttype == tensor_dbl, 'get_tensor_type is tensor_dbl')
    ndims = size(dims)
    call check(back%get_tensor_dims('x', dims, ndims), 'get_tensor_dims')
    call expect(ndims == 2 .and. dims(1) == 3 .and. dims(2) == 2, 'get_tensor_dims is [3, 2]')
    call check(back%get_metadata_field_type('step', ttype), 'get_metadata_field_type')
    call expect(ttype == meta_dbl, 'step is meta_dbl')
    call check(back%get_metadata_field_type('units', ttype), 'get_metadata_field_type of a string')
    call expect(ttype == meta_string, 'units is meta_string')
    call check(back%get_meta_scalars('step', steps), 'get_meta_scalars')
    call expect(size(steps) == 2 .and. steps(2) == 8.5_real64, 'meta scalars accumulate')
    call expect(index(back%to_string(), 'Tensor x') > 0, 'dataset to_string')
    call check(client%dataset_exists('py_typed', exists), 'dataset_exists py_typed')
    if (exists) then  ! connect mode: a Python client put uint32/uint64 metadata (Fortran has no unsigned)
      block
        type(dataset_type) :: typed
        integer(int32), pointer :: counts(:)
        call check(client%get_dataset('py_typed', typed), 'get_dataset of uint metadata')
        call check(typed%get_metadata_field_type('count', ttype), 'get_metadata_field_type uint32')
        call expect(ttype == meta_uint32, 'count is meta_uint32')
        call check(typed%get_metadata_field_type('big', ttype), 'get_metadata_field_type uint64')
        call expect(ttype == meta_uint64, 'big is meta_uint64')
        call expect(typed%get_meta_scalars('count', counts) == SRTypeError, 'uint32 scalars into int32: SRTypeError')
        call check(client%put_dataset(typed), 'put_dataset of uint metadata again')
        print '(a)', 'UINT METADATA CHECKED'
      end block
    end if
    call back%print_dataset()
    do i = 1, 3
      call check(client%append_to_list(key('list'), ds), 'append_to_list')
    end do
    call check(client%poll_list_length(key('list'), 3, 10, 20, exists), 'poll_list_length')
    call expect(exists, 'the list has 3 entries')
    call check(client%get_datasets_from_list_range(key('list'), 1, 2, got), 'get_datasets_from_list_range')
    call expect(size(got) == 2, 'two datasets in the range')

    ! models
    call check(client%set_model_from_file(key('net'), trim(model_file), 'TORCH', 'CPU'), 'set_model_from_file')
    call check(client%put_tensor(key('in'), x, shape(x)), 'put_tensor model input')
    call check(client%run_model(key('net'), [key('in')], [key('out')]), 'run_model')
    call check(client%unpack_tensor(key('out'), y, shape(y)), 'unpack model output')
    call expect(all(y == x + 1), 'run_model output is input + 1')
    block  ! get_model gives the bytes that were set, get_script the source (SmartRedis's calls)
      character(len=:), allocatable :: file_bytes
      character(len=200000) :: model
      character(len=4) :: small
      character(len=256) :: source
      integer :: unit, nbytes
      open (newunit=unit, file=trim(model_file), access='stream', form='unformatted', status='old')
      inquire (unit=unit, size=nbytes)
      allocate(character(len=nbytes) :: file_bytes)
      read (unit) file_bytes
      close (unit)
      call check(client%get_model(key('net'), model), 'get_model')
      call expect(model(1:nbytes) == file_bytes .and. len_trim(model(nbytes + 1:)) == 0, &
           'get_model gives the bytes that were set')
      call expect(client%get_model(key('net'), small) == SRBadAllocError, 'get_model into too short a string')
      call check(client%set_script(key('scr'), 'CPU', 'def twice(x):' // new_line('a') // '    return 2 * x' // &
           new_line('a')), 'set_script')
      call check(client%get_script(key('scr'), source), 'get_script')
      call expect(trim(source) == 'def twice(x):' // new_line('a') // '    return 2 * x' // new_line('a'), &
           'get_script gives the source that was set')
      call expect(client%get_script(key('never_stored'), source) == SRKeyError, 'get_script of a missing script')
    end block
    call check(client%set_model_from_file_multigpu(key('gnet'), trim(model_file), 'TORCH', 0, 1), &
         'set_model_from_file_multigpu')
    call check(client%run_model_multigpu(key('gnet'), [key('in')], [key('gout')], rank, 0, 1), 'run_model_multigpu')
    call check(client%model_exists(key('gnet'), exists), 'model_exists')
    call expect(exists, 'the multigpu model exists')
    call check(client%delete_model_multigpu(key('gnet'), 0, 1), 'delete_model_multigpu')

    ! error codes and get_last_error
    call check(client%delete_tensor(key('never_stored')), 'delete of a missing tensor is no error')
    call check(client%delete_dataset(key('never_stored')), 'delete of a missing dataset is no error')
    code = client%unpack_tensor(key('never_stored'), y, shape(y))
    call expect(code == SRKeyError, 'a missing tensor is SRKeyError')
    text = get_last_error()
    call expect(len(text) > 0, 'get_last_error after a failure')
    call print_last_error(6)
    block
      integer(int32) :: wrong(3, 2)
      code = client%unpack_tensor(key('out'), wrong, shape(wrong))
      call expect(code == SRTypeError, 'a type mismatch is SRTypeError')
    end block
    code = client%set_model_multigpu(key('bad'), 'bytes', 'TORCH', -1, 1)
    call expect(code == SRParameterError, 'a negative first_gpu is SRParameterError')
    call expect(SRInvalidError == -1, 'SRInvalidError is -1 as in SmartRedis')
    call expect(.not. client%SR_error_parser(SRNoError), 'SR_error_parser(SRNoError)')
    call expect(index(client%to_string(), 'fortran_sr') > 0, 'client to_string')
    call client%print_client()

  call MPI_Barrier(MPI_Comm(comm))
  print '(a, i0)', 'SMARTREDIS FORTRAN OK ', rank
  call MPI_Finalize()

contains

  function key(name) result(k)
    character(len=*), intent(in) :: name
    character(len=:), allocatable :: k
    k = 'f' // trim(rank_text) // '.' // name
  end function

  subroutine check(status, what)
    integer(kind=4), intent(in) :: status
    character(len=*), intent(in) :: what
    if (status /= SRNoError) then
      print '(a)', 'FAILED: ' // what // ': ' // get_last_error()
      call MPI_Abort(MPI_COMM_WORLD, 1, ierr)
    end if
  end subroutine

  subroutine expect(condition, what)
    logical, intent(in) :: condition
    character(len=*), intent(in) :: what
    if (.not. condition) then
      print '(a)', 'FAILED: ' // what
      call MPI_Abort(MPI_COMM_WORLD, 1, ierr)
    end if
  end subroutine
end program smartredis_program
