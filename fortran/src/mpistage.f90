!> mpistage's Fortran client, with SmartRedis's Fortran interface:
!>
!>     use mpistage, only : client_type, dataset_type, SRNoError, get_last_error, mpistage_comm
!>
!> Every type-bound function returns an integer status (SRNoError = 0 on success); after a
!> failure get_last_error() describes it. Keys are Fortran strings, trailing blanks trimmed.
!> Arrays are stored in Fortran order with their shape in index order, so a(i,j) put here is
!> x[i-1, j-1] in Python, and the other way round (docs/fortran.md).
module mpistage
  use mpi_f08, only : MPI_Comm
  use, intrinsic :: iso_fortran_env, only : int8, int16, int32, int64, real32, real64, error_unit, output_unit
  use, intrinsic :: iso_c_binding
  use mpistage_wire
  use mpistage_link
  use smartredis_configoptions, only : configoptions_type, ssdb_to_address
  implicit none
  private

  public :: client_type, dataset_type, run_handle, mpistage_comm, mpistage_close, get_last_error, print_last_error
  public :: mpistage_comm_int
  public :: enum_kind, SRNoError, SRBadAllocError, SRDatabaseError, SRInternalError, SRRuntimeError, &
       SRParameterError, SRTimeoutError, SRKeyError, SRInvalidError, SRTypeError
  public :: mpistage_hash_slot, mpistage_shard_of, mpistage_crc16

  interface
    integer(c_int) function c_usleep(usec) bind(c, name='usleep')
      import :: c_int
      integer(c_int), value :: usec
    end function
  end interface

  !> A dataset's tensors and metadata fields are looked up by name.
  type :: named_t
    character(len=:), allocatable :: name
  end type

  type, extends(named_t) :: ds_tensor_t
    type(desc_t) :: desc
    integer(int8), allocatable :: data(:)
  end type

  type, extends(named_t) :: ds_meta_t
    integer :: kind = META_SCALAR
    integer :: dtype = 0
    integer :: n = 0
    integer(int8), allocatable :: values(:)   ! scalars: n * itemsize bytes; strings: concatenated
    integer(int64), allocatable :: slen(:)     ! strings: their lengths
  end type

  !> Named tensors and metadata, put and fetched as one object.
  type :: dataset_type
    private
    character(len=:), allocatable :: name
    type(ds_tensor_t), allocatable :: tensors(:)
    type(ds_meta_t), allocatable :: meta(:)
  contains
    procedure :: initialize => dataset_initialize
    procedure :: get_name => dataset_get_name
    procedure :: add_meta_string
    procedure :: get_meta_strings
    procedure :: get_tensor_names
    procedure :: get_metadata_field_names
    include 'generated/dataset_decls.inc'
    include 'smartredis_dataset_decls.inc'
  end type dataset_type

  !> A run_model_async / run_script_async call in flight: done() says whether it has finished
  !> (never waits); wait() waits (optionally at most timeout_ms) and returns the run's status.
  type :: run_handle
    private
    integer :: shard = -1, seq = -1
    logical :: finished = .false.
    integer(enum_kind) :: code = SRInvalidError
    character(len=:), allocatable :: error
  contains
    procedure :: done => run_done
    procedure :: wait => run_wait
  end type run_handle

  !> A client of the mpistage servers. All client_type objects of a process share one
  !> connection, opened by the first initialize (collective over the application ranks).
  type :: client_type
    private
    logical :: initialized = .false.
    character(len=:), allocatable :: logger_name
    character(len=:), allocatable :: put_prefix, get_prefix, get_prefixes
    logical :: prefix_tensor = .true., prefix_dataset = .true., prefix_list = .true., prefix_model = .false.
  contains
    generic :: initialize => initialize_simple, initialize_cluster
    procedure, private :: initialize_simple, initialize_cluster
    procedure :: isinitialized
    procedure :: destructor
    procedure :: put_dataset, get_dataset
    procedure :: append_to_list, get_list_length
    procedure :: get_datasets_from_list, get_dataset_list_range
    procedure :: set_model_from_file, set_model, set_script_from_file, set_script
    procedure :: run_model, run_script, run_model_async, run_script_async, delete_model, delete_script
    procedure :: get_model, get_script
    procedure :: set_data_source
    procedure :: get_num_shards
    include 'generated/client_decls.inc'
    include 'smartredis_client_decls.inc'
  end type client_type

contains

  ! ================================================================== module functions
  !> The application's communicator. In MPMD mode (mpiexec -n S mpistage-server : -n N ./app)
  !> MPI_COMM_WORLD also holds the server ranks: use this for the application's own
  !> communication instead. Otherwise it is MPI_COMM_WORLD. Collective on first use.
  function mpistage_comm() result(comm)
    type(MPI_Comm) :: comm
    call ssdb_to_address()
    comm = link_app_comm()
  end function

  !> mpistage_comm() as a `use mpi` integer handle: `comm = mpistage_comm_int()` (gfortran 12
  !> does not take a component of a function result, `mpistage_comm()%MPI_VAL`).
  integer function mpistage_comm_int() result(handle)
    type(MPI_Comm) :: comm
    call ssdb_to_address()
    comm = link_app_comm()
    handle = comm%MPI_VAL
  end function

  !> Say goodbye to the servers now (collective over the application ranks). Optional: it
  !> happens by itself in MPI_Finalize (or at exit when mpistage initialized MPI).
  integer(enum_kind) function mpistage_close() result(code)
    code = link_close()
  end function

  integer function mpistage_crc16(text)
    character(len=*), intent(in) :: text
    mpistage_crc16 = crc16(str_bytes(text))
  end function

  integer function mpistage_hash_slot(key)
    character(len=*), intent(in) :: key
    mpistage_hash_slot = hash_slot(key)
  end function

  integer function mpistage_shard_of(key, nshards)
    character(len=*), intent(in) :: key
    integer, intent(in) :: nshards
    mpistage_shard_of = shard_of(key, nshards)
  end function

  ! ================================================================== client: lifetime
  !> Connect (first call in the process: collective over the application ranks; initializes
  !> MPI with MPI_THREAD_MULTIPLE when the application has not).
  integer(enum_kind) function initialize_simple(self, logger_name) result(code)
    class(client_type), intent(inout) :: self
    character(len=*), intent(in), optional :: logger_name
    character(len=:), allocatable :: env
    call clear_error()
    call ssdb_to_address()  ! SSDB (SmartRedis's) names the connection file too
    self%logger_name = 'mpistage'
    if (present(logger_name)) self%logger_name = trim(logger_name)
    code = link_open()
    if (code /= SRNoError) return
    env = getenv_str('SSKEYOUT')
    self%put_prefix = first_item(env)
    self%get_prefixes = getenv_str('SSKEYIN')
    self%get_prefix = first_item(self%get_prefixes)
    self%initialized = .true.
  end function

  !> SmartRedis's older initialize(cluster, logger_name); cluster is ignored.
  integer(enum_kind) function initialize_cluster(self, cluster, logger_name) result(code)
    class(client_type), intent(inout) :: self
    logical, intent(in) :: cluster
    character(len=*), intent(in), optional :: logger_name
    if (cluster) continue
    code = self%initialize_simple(logger_name)
  end function

  logical function isinitialized(self)
    class(client_type), intent(in) :: self
    isinitialized = self%initialized
  end function

  !> Forget this client object (the process's connection stays open; see mpistage_close).
  integer(enum_kind) function destructor(self) result(code)
    class(client_type), intent(inout) :: self
    self%initialized = .false.
    code = SRNoError
  end function

  integer function get_num_shards(self)
    class(client_type), intent(in) :: self
    get_num_shards = link_nshards()
  end function

  ! ================================================================== keys
  function getenv_str(name) result(value)
    character(len=*), intent(in) :: name
    character(len=:), allocatable :: value
    integer :: n, st
    call get_environment_variable(name, length=n, status=st)
    if (st /= 0 .or. n == 0) then
      value = ''
      return
    end if
    allocate(character(len=n) :: value)
    call get_environment_variable(name, value=value)
  end function

  function first_item(list) result(item)
    character(len=*), intent(in) :: list
    character(len=:), allocatable :: item
    integer :: c
    c = index(list, ',')
    if (c == 0) then
      item = trim(list)
    else
      item = trim(list(1:c-1))
    end if
  end function

  logical function prefix_used(self, kind)
    class(client_type), intent(in) :: self
    character(len=1), intent(in) :: kind
    select case (kind)
    case (KIND_TENSOR); prefix_used = self%prefix_tensor
    case (KIND_DATASET); prefix_used = self%prefix_dataset
    case (KIND_LIST); prefix_used = self%prefix_list
    case default; prefix_used = self%prefix_model
    end select
  end function

  !> The key of `name` for `kind`: trimmed, with the ensemble prefix when in use.
  function make_key(self, name, kind, reading) result(key)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    character(len=1), intent(in) :: kind
    logical, intent(in) :: reading
    character(len=:), allocatable :: key, prefix
    prefix = ''
    if (prefix_used(self, kind)) then
      if (reading) then
        if (allocated(self%get_prefix)) prefix = self%get_prefix
      else
        if (allocated(self%put_prefix)) prefix = self%put_prefix
      end if
    end if
    if (len(prefix) > 0) then
      key = prefix // '.' // trim(name)
    else
      key = trim(name)
    end if
  end function

  !> Status of a call about to act on `key`: the client must be initialized and the key 1..1024 bytes.
  integer(enum_kind) function check_key(self, key) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: key
    call clear_error()
    code = SRNoError
    if (.not. self%initialized .or. .not. link_is_open()) then
      call set_error('the client is not initialized (call client%initialize first)')
      code = SRInvalidError
    else if (len(key) == 0) then
      call set_error('a key must not be empty')
      code = SRParameterError
    else if (len(key) > MAX_KEY_BYTES) then
      call set_error('key of ' // int_str(int(len(key), int64)) // ' bytes is longer than the limit ' // &
           int_str(int(MAX_KEY_BYTES, int64)))
      code = SRParameterError
    end if
  end function

  integer function shard(key)
    character(len=*), intent(in) :: key
    shard = shard_of(key, link_nshards())
  end function

  !> A request carrying a kind byte and a key (DELETE, EXISTS, ...), with up to two more key fields.
  integer(enum_kind) function keyed(op, kind, key, r, more) result(code)
    integer, intent(in) :: op
    character(len=1), intent(in) :: kind
    character(len=*), intent(in) :: key
    type(reply_t), intent(out) :: r
    character(len=*), intent(in), optional :: more
    type(msg_t) :: m
    m = keyed_msg(kind, key)
    if (present(more)) call msg_add_str(m, more)
    code = link_request(shard(key), op, m, r)
  end function

  !> The fields kind, key.
  function keyed_msg(kind, key) result(m)
    character(len=1), intent(in) :: kind
    character(len=*), intent(in) :: key
    type(msg_t) :: m
    call msg_init(m)
    call msg_add_str(m, kind)
    call msg_add_str(m, key)
  end function

  integer(enum_kind) function exists_raw(self, kind, key, exists) result(code)
    class(client_type), intent(in) :: self
    character(len=1), intent(in) :: kind
    character(len=*), intent(in) :: key
    logical, intent(out) :: exists
    type(reply_t) :: r
    exists = .false.
    code = check_key(self, key)
    if (code /= SRNoError) return
    code = keyed(OP_EXISTS, kind, key, r)
    if (code == SRNoError) exists = field_u8(r, 1) == 1
  end function

  subroutine sleep_ms(ms)
    integer, intent(in) :: ms
    integer(c_int) :: rc
    if (ms > 0) rc = c_usleep(int(min(ms, 2000000), c_int) * 1000_c_int)
  end subroutine

  ! ================================================================== tensors (raw)
  !> Put nelem elements (nbytes at ptr) as a Fortran-order tensor of shape dims.
  integer(enum_kind) function client_put_raw(self, name, dtype, ptr, nelem, esize, dims) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    integer, intent(in) :: dtype, esize
    type(c_ptr), intent(in) :: ptr
    integer(int64), intent(in) :: nelem
    integer, intent(in) :: dims(:)
    character(len=:), allocatable :: key
    type(desc_t) :: d
    key = make_key(self, name, KIND_TENSOR, .false.)
    code = check_key(self, key)
    if (code /= SRNoError) return
    code = make_desc(dtype, dims, nelem, d)
    if (code /= SRNoError) return
    code = put_desc(key, d, ptr, nelem * esize)
  end function

  integer(enum_kind) function make_desc(dtype, dims, nelem, d) result(code)
    integer, intent(in) :: dtype
    integer, intent(in) :: dims(:)
    integer(int64), intent(in) :: nelem
    type(desc_t), intent(out) :: d
    code = SRNoError
    if (any(dims < 0) .or. product(int(dims, int64)) /= nelem) then
      call set_error('dims do not match the array: product(dims) must be its number of elements')
      code = SRParameterError
      return
    end if
    d%dtype = dtype
    d%order = ORDER_F
    d%ndim = size(dims)
    d%shape = int(dims, int64)
  end function

  integer(enum_kind) function put_desc(key, d, ptr, nbytes) result(code)
    character(len=*), intent(in) :: key
    type(desc_t), intent(in) :: d
    type(c_ptr), intent(in) :: ptr
    integer(int64), intent(in) :: nbytes
    type(msg_t) :: m
    type(reply_t) :: r
    integer :: s, seq
    if (nbytes > huge(0_int32)) then
      call set_error('a tensor of more than 2 GiB - 1 bytes is not supported')
      code = SRParameterError
      return
    end if
    call msg_init(m)
    call msg_add_str(m, key)
    call msg_add(m, desc_pack(d))
    s = shard(key)
    seq = link_start(s, OP_PUT_TENSOR, m, nbytes)
    call link_send_ptr(s, seq, ptr, nbytes)
    code = link_finish(s, seq, r)
  end function

  !> Send GET_TENSOR of `key` and take the reply's descriptor; its payload (desc_nbytes(d)
  !> bytes) is then to be received from shard s on tag seq. A malformed reply is drained here.
  integer(enum_kind) function get_start(key, s, seq, d) result(code)
    character(len=*), intent(in) :: key
    integer, intent(out) :: s, seq
    type(desc_t), intent(out) :: d
    type(msg_t) :: m
    type(reply_t) :: r
    logical :: ok
    call msg_init(m)
    call msg_add_str(m, key)
    s = shard(key)
    seq = link_start(s, OP_GET_TENSOR, m, 0_int64)
    code = link_finish(s, seq, r)
    if (code /= SRNoError) return
    ok = r%nfields >= 1
    if (ok) call desc_unpack(field_bytes(r, 1), d, ok)
    if (ok) ok = desc_nbytes(d) == r%payload_bytes
    if (ok) return
    call set_error('malformed tensor descriptor in the reply')
    code = SRInternalError
    call drain(s, seq, r%payload_bytes)
  end function

  !> Receive and drop a reply's payload of n bytes that the server has sent anyway.
  subroutine drain(s, seq, n)
    integer, intent(in) :: s, seq
    integer(int64), intent(in) :: n
    integer(int8), allocatable :: tmp(:)
    allocate(tmp(n))
    call link_recv_bytes(s, seq, tmp)
  end subroutine

  !> GET_TENSOR of `key`: its descriptor and bytes (in the order it was put with).
  integer(enum_kind) function get_desc(key, d, bytes) result(code)
    character(len=*), intent(in) :: key
    type(desc_t), intent(out) :: d
    integer(int8), allocatable, intent(out) :: bytes(:)
    integer :: s, seq
    code = get_start(key, s, seq, d)
    if (code /= SRNoError) return
    allocate(bytes(desc_nbytes(d)))
    call link_recv_bytes(s, seq, bytes)
  end function

  !> Check a stored descriptor against the caller's array: same dtype, shape == dims.
  integer(enum_kind) function check_target(what, d, dtype, nelem, dims) result(code)
    character(len=*), intent(in) :: what
    type(desc_t), intent(in) :: d
    integer, intent(in) :: dtype
    integer(int64), intent(in) :: nelem
    integer, intent(in) :: dims(:)
    code = SRNoError
    if (d%dtype /= dtype) then
      call set_error(what // ' is ' // dtype_name(d%dtype) // ', the result array is ' // dtype_name(dtype))
      code = SRTypeError
    else if (d%ndim /= size(dims)) then
      call set_error(what // ' has ' // int_str(int(d%ndim, int64)) // ' dimensions, dims has ' // &
           int_str(size(dims, kind=int64)))
      code = SRParameterError
    else if (any(d%shape /= int(dims, int64)) .or. product(d%shape) /= nelem) then
      call set_error(what // ' has shape ' // shape_str(d%shape) // ', dims ' // &
           shape_str(int(dims, int64)) // ' and the result array ' // int_str(nelem) // ' elements')
      code = SRParameterError
    end if
  end function

  function shape_str(s) result(t)
    integer(int64), intent(in) :: s(:)
    character(len=:), allocatable :: t
    integer :: i
    t = '('
    do i = 1, size(s)
      t = t // int_str(s(i))
      if (i < size(s)) t = t // ', '
    end do
    t = t // ')'
  end function

  !> Copy stored bytes into the caller's array, reordering a C-order tensor.
  subroutine deliver(d, bytes, ptr)
    type(desc_t), intent(in) :: d
    integer(int8), intent(in) :: bytes(:)
    type(c_ptr), intent(in) :: ptr
    integer(int8), pointer :: dst(:)
    if (size(bytes) == 0) return
    call c_f_pointer(ptr, dst, [size(bytes, kind=int64)])
    if (d%order == ORDER_F .or. d%ndim <= 1) then
      dst = bytes
    else
      call reorder_c_to_f(bytes, dst, d%shape, dtype_size(d%dtype))
    end if
  end subroutine

  integer(enum_kind) function client_unpack_raw(self, name, dtype, ptr, nelem, dims) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    integer, intent(in) :: dtype
    type(c_ptr), intent(in) :: ptr
    integer(int64), intent(in) :: nelem
    integer, intent(in) :: dims(:)
    character(len=:), allocatable :: key
    type(desc_t) :: d
    integer(int8), allocatable :: tmp(:)
    integer(int8), pointer :: dst(:)
    integer(int64) :: nbytes
    integer :: s, seq
    key = make_key(self, name, KIND_TENSOR, .true.)
    code = check_key(self, key)
    if (code /= SRNoError) return
    code = get_start(key, s, seq, d)
    if (code /= SRNoError) return
    nbytes = desc_nbytes(d)
    code = check_target('tensor "' // key // '"', d, dtype, nelem, dims)
    if (code /= SRNoError) then
      call drain(s, seq, nbytes)
      return
    end if
    if (nbytes == 0) return
    if (d%order == ORDER_F .or. d%ndim <= 1) then
      call link_recv_ptr(s, seq, ptr, nbytes)
    else
      allocate(tmp(nbytes))
      call link_recv_bytes(s, seq, tmp)
      call c_f_pointer(ptr, dst, [nbytes])
      call reorder_c_to_f(tmp, dst, d%shape, dtype_size(d%dtype))
    end if
  end function

  ! ================================================================== tensors

  !> COPY or RENAME: by the server when both keys live on one shard, else GET + PUT (+ DELETE).
  integer(enum_kind) function move(self, kind, src_name, dst_name, op) result(code)
    class(client_type), intent(in) :: self
    character(len=1), intent(in) :: kind
    character(len=*), intent(in) :: src_name, dst_name
    integer, intent(in) :: op
    character(len=:), allocatable :: src, dst
    type(reply_t) :: r
    type(desc_t) :: d
    type(dataset_type) :: ds
    integer(int8), allocatable, target :: bytes(:)
    character(len=:), allocatable :: items(:)
    integer :: i
    src = make_key(self, src_name, kind, .true.)
    dst = make_key(self, dst_name, kind, .false.)
    code = check_key(self, src)
    if (code == SRNoError) code = check_key(self, dst)
    if (code /= SRNoError) return
    if (shard(src) == shard(dst)) then
      code = keyed(op, kind, src, r, dst)
      return
    end if
    select case (kind)
    case (KIND_TENSOR)
      code = get_desc(src, d, bytes)
      if (code /= SRNoError) return
      if (size(bytes) > 0) then
        code = put_desc(dst, d, c_loc(bytes), size(bytes, kind=int64))
      else
        code = put_desc(dst, d, c_null_ptr, 0_int64)
      end if
    case (KIND_DATASET)
      code = fetch_dataset(src, ds)
      if (code == SRNoError) code = put_dataset_as(dst, ds)
    case default
      code = list_range_raw(src, 0_int64, -1_int64, items)
      if (code /= SRNoError) return
      code = keyed(OP_DELETE, KIND_LIST, dst, r)
      if (code == SRKeyError) code = SRNoError
      do i = 1, size(items)
        if (code == SRNoError) code = list_append_raw(dst, trim(items(i)))
      end do
    end select
    if (code == SRNoError .and. op == OP_RENAME) code = keyed(OP_DELETE, kind, src, r)
  end function

  !> SmartRedis's poll: up to num_tries existence checks, poll_frequency_ms apart.
  integer(enum_kind) function poll_exists(self, kind, key, poll_frequency_ms, num_tries, exists) result(code)
    class(client_type), intent(inout) :: self
    character(len=1), intent(in) :: kind
    character(len=*), intent(in) :: key
    integer, intent(in) :: poll_frequency_ms, num_tries
    logical, intent(out) :: exists
    integer :: i
    exists = .false.
    code = SRNoError
    do i = 1, num_tries
      code = exists_raw(self, kind, key, exists)
      if (code /= SRNoError .or. exists) return
      if (i < num_tries) call sleep_ms(poll_frequency_ms)
    end do
  end function

  ! ================================================================== datasets (client side)
  integer(enum_kind) function put_dataset(self, dataset) result(code)
    class(client_type), intent(in) :: self
    type(dataset_type), intent(in) :: dataset
    character(len=:), allocatable :: key
    if (.not. allocated(dataset%name)) then
      call set_error('the dataset is not initialized (call dataset%initialize(name) first)')
      code = SRParameterError
      return
    end if
    key = make_key(self, dataset%name, KIND_DATASET, .false.)
    code = check_key(self, key)
    if (code == SRNoError) code = put_dataset_as(key, dataset)
  end function

  integer(enum_kind) function put_dataset_as(key, ds) result(code)
    character(len=*), intent(in) :: key
    type(dataset_type), intent(in), target :: ds
    type(msg_t) :: m
    type(reply_t) :: r
    integer :: s, seq, i
    integer(int64) :: total
    call msg_init(m)
    call msg_add_str(m, key)
    call msg_add(m, pack_metadata(ds))
    total = 0
    if (allocated(ds%tensors)) then
      do i = 1, size(ds%tensors)
        call msg_add_str(m, ds%tensors(i)%name)
        call msg_add(m, desc_pack(ds%tensors(i)%desc))
        total = total + size(ds%tensors(i)%data, kind=int64)
      end do
    end if
    s = shard(key)
    seq = link_start(s, OP_PUT_DATASET, m, total)
    if (allocated(ds%tensors)) then
      do i = 1, size(ds%tensors)
        if (size(ds%tensors(i)%data) > 0) &
             call link_send_ptr(s, seq, c_loc(ds%tensors(i)%data), size(ds%tensors(i)%data, kind=int64))
      end do
    end if
    code = link_finish(s, seq, r)
  end function

  integer(enum_kind) function get_dataset(self, name, dataset) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    type(dataset_type), intent(out) :: dataset
    character(len=:), allocatable :: key
    key = make_key(self, name, KIND_DATASET, .true.)
    code = check_key(self, key)
    if (code /= SRNoError) return
    code = fetch_dataset(key, dataset)
    dataset%name = trim(name)
  end function

  integer(enum_kind) function fetch_dataset(key, ds) result(code)
    character(len=*), intent(in) :: key
    type(dataset_type), intent(out) :: ds
    type(msg_t) :: m
    type(reply_t) :: r
    integer :: s, seq, i, nt
    integer(int64) :: got
    logical :: ok
    call msg_init(m)
    call msg_add_str(m, key)
    s = shard(key)
    seq = link_start(s, OP_GET_DATASET, m, 0_int64)
    code = link_finish(s, seq, r)
    if (code /= SRNoError) return
    ds%name = field_str(r, 1)
    ok = r%nfields >= 2 .and. mod(r%nfields, 2) == 0
    if (ok) call unpack_metadata(field_bytes(r, 2), ds, ok)
    nt = max(0, (r%nfields - 2) / 2)
    allocate(ds%tensors(nt))
    got = 0
    do i = 1, nt
      if (.not. ok) exit
      ds%tensors(i)%name = field_str(r, 1 + 2*i)
      call desc_unpack(field_bytes(r, 2 + 2*i), ds%tensors(i)%desc, ok)
      if (ok) then
        allocate(ds%tensors(i)%data(desc_nbytes(ds%tensors(i)%desc)))
        got = got + desc_nbytes(ds%tensors(i)%desc)
      end if
    end do
    if (.not. ok .or. got /= r%payload_bytes) then
      call set_error('malformed GET_DATASET reply')
      code = SRInternalError
      call drain(s, seq, r%payload_bytes)
      return
    end if
    do i = 1, nt
      call link_recv_bytes(s, seq, ds%tensors(i)%data)
    end do
  end function

  ! ================================================================== aggregation lists
  !> Append a dataset's name to a list (put the dataset itself first).
  integer(enum_kind) function append_to_list(self, list_name, dataset) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: list_name
    type(dataset_type), intent(in) :: dataset
    character(len=:), allocatable :: key
    key = make_key(self, list_name, KIND_LIST, .false.)
    code = check_key(self, key)
    if (code /= SRNoError) return
    if (.not. allocated(dataset%name)) then
      call set_error('the dataset is not initialized')
      code = SRParameterError
      return
    end if
    code = list_append_raw(key, make_key(self, dataset%name, KIND_DATASET, .false.))
  end function

  integer(enum_kind) function list_append_raw(key, item) result(code)
    character(len=*), intent(in) :: key, item
    type(msg_t) :: m
    type(reply_t) :: r
    call msg_init(m)
    call msg_add_str(m, key)
    call msg_add_str(m, item)
    code = link_request(shard(key), OP_LIST_APPEND, m, r)
  end function

  integer(enum_kind) function get_list_length(self, list_name, result_length) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: list_name
    integer, intent(out) :: result_length
    character(len=:), allocatable :: key
    type(msg_t) :: m
    type(reply_t) :: r
    result_length = 0
    key = make_key(self, list_name, KIND_LIST, .true.)
    code = check_key(self, key)
    if (code /= SRNoError) return
    call msg_init(m)
    call msg_add_str(m, key)
    code = link_request(shard(key), OP_LIST_LENGTH, m, r)
    if (code == SRNoError) result_length = int(field_i64(r, 1))
  end function

  integer(enum_kind) function poll_list_length_cmp(self, list_name, list_length, poll_frequency_ms, &
       num_tries, poll_result, cmp) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: list_name
    integer, intent(in) :: list_length, poll_frequency_ms, num_tries, cmp
    logical, intent(out) :: poll_result
    integer :: i, n
    poll_result = .false.
    code = SRNoError
    do i = 1, num_tries
      code = self%get_list_length(list_name, n)
      if (code /= SRNoError) return
      select case (cmp)
      case (0); poll_result = n == list_length
      case (1); poll_result = n >= list_length
      case default; poll_result = n <= list_length
      end select
      if (poll_result) return
      if (i < num_tries) call sleep_ms(poll_frequency_ms)
    end do
  end function

  integer(enum_kind) function list_range_raw(key, start, end, items) result(code)
    character(len=*), intent(in) :: key
    integer(int64), intent(in) :: start, end
    character(len=:), allocatable, intent(out) :: items(:)
    type(msg_t) :: m
    type(reply_t) :: r
    integer :: i, maxlen
    call msg_init(m)
    call msg_add_str(m, key)
    call msg_add_u64(m, start)
    call msg_add_u64(m, end)
    code = link_request(shard(key), OP_LIST_RANGE, m, r)
    if (code /= SRNoError) then
      allocate(character(len=1) :: items(0))
      return
    end if
    maxlen = 1
    do i = 1, r%nfields
      maxlen = max(maxlen, int(field_len(r, i)))
    end do
    allocate(character(len=maxlen) :: items(r%nfields))
    do i = 1, r%nfields
      items(i) = field_str(r, i)
    end do
  end function

  !> The datasets named by positions start_index..end_index (inclusive, 0-based; negative
  !> counts from the end) of a list.
  integer(enum_kind) function get_dataset_list_range(self, list_name, start_index, end_index, datasets) &
       result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: list_name
    integer, intent(in) :: start_index, end_index
    type(dataset_type), dimension(:), allocatable, intent(out) :: datasets
    character(len=:), allocatable :: key, items(:)
    integer :: i
    key = make_key(self, list_name, KIND_LIST, .true.)
    code = check_key(self, key)
    if (code /= SRNoError) return
    code = list_range_raw(key, int(start_index, int64), int(end_index, int64), items)
    if (code /= SRNoError) return
    allocate(datasets(size(items)))
    do i = 1, size(items)
      code = fetch_dataset(trim(items(i)), datasets(i))
      if (code /= SRNoError) return
    end do
  end function

  integer(enum_kind) function get_datasets_from_list(self, list_name, datasets, num_datasets) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: list_name
    type(dataset_type), dimension(:), allocatable, intent(out) :: datasets
    integer, intent(out) :: num_datasets
    code = self%get_dataset_list_range(list_name, 0, -1, datasets)
    num_datasets = 0
    if (allocated(datasets)) num_datasets = size(datasets)
  end function

  ! ================================================================== models and scripts
  !> Read a whole file as bytes.
  integer(enum_kind) function read_file_bytes(path, bytes) result(code)
    character(len=*), intent(in) :: path
    integer(int8), allocatable, intent(out) :: bytes(:)
    integer :: u, ios
    integer(int64) :: sz
    code = SRNoError
    open (newunit=u, file=trim(path), access='stream', form='unformatted', status='old', &
         action='read', iostat=ios)
    if (ios /= 0) then
      call set_error('cannot open ' // trim(path))
      code = SRParameterError
      allocate(bytes(0))
      return
    end if
    inquire (unit=u, size=sz)
    allocate(bytes(sz))
    if (sz > 0) read (u, iostat=ios) bytes
    close (u)
    if (ios /= 0) then
      call set_error('cannot read ' // trim(path))
      code = SRParameterError
    end if
  end function

  !> Send one request (fields `m`, and `bytes` as its one payload part when present) to every
  !> shard, all before waiting for a reply, then wait for every reply (never stopping at an
  !> error). Returns the first error, whose message is left as the last error, and in nfailed
  !> how many shards failed.
  integer(enum_kind) function every_shard(op, m, nfailed, bytes) result(code)
    integer, intent(in) :: op
    type(msg_t), intent(in) :: m
    integer, intent(out) :: nfailed
    integer(int8), intent(in), target, optional :: bytes(:)
    type(msg_t) :: mm
    type(reply_t) :: r
    integer :: s
    integer, allocatable :: seqs(:)
    integer(int64) :: n
    integer(enum_kind) :: c
    character(len=:), allocatable :: first_error
    n = 0
    if (present(bytes)) n = size(bytes, kind=int64)
    allocate(seqs(0:link_nshards() - 1))
    do s = 0, link_nshards() - 1
      mm = m
      seqs(s) = link_start(s, op, mm, n)
      if (n > 0) call link_send_ptr(s, seqs(s), c_loc(bytes), n)
    end do
    code = SRNoError
    nfailed = 0
    do s = 0, link_nshards() - 1
      c = link_finish(s, seqs(s), r)
      if (c == SRNoError) cycle
      nfailed = nfailed + 1
      if (code == SRNoError) then
        code = c
        first_error = get_last_error()
      end if
    end do
    if (code /= SRNoError) call set_error(first_error)
  end function

  !> SET_MODEL / SET_SCRIPT (fields `m`, payload `bytes`) of `key` on every shard, all or nothing:
  !> when some shards take it and others fail, `key` is deleted on every shard (an earlier model
  !> or script of that name too), so a name is never on only some shards. Returns the first error.
  integer(enum_kind) function set_everywhere(op, kind, key, m, bytes) result(code)
    integer, intent(in) :: op
    character(len=1), intent(in) :: kind
    character(len=*), intent(in) :: key
    type(msg_t), intent(in) :: m
    integer(int8), intent(in) :: bytes(:)
    character(len=:), allocatable :: text
    integer :: nfailed, ignored
    integer(enum_kind) :: undo
    code = every_shard(op, m, nfailed, bytes)
    if (nfailed == 0 .or. nfailed == link_nshards()) return
    text = get_last_error()
    undo = every_shard(OP_DELETE, keyed_msg(kind, key), ignored)
    call set_error(text // ' (so it was deleted on every shard)')
  end function

  integer(enum_kind) function set_model_bytes(self, name, model, backend, device, batch_size, &
       min_batch_size, min_batch_timeout, tag) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name, backend, device
    integer(int8), intent(in) :: model(:)
    integer, intent(in), optional :: batch_size, min_batch_size, min_batch_timeout
    character(len=*), intent(in), optional :: tag
    character(len=:), allocatable :: key
    type(msg_t) :: m
    key = make_key(self, name, KIND_MODEL, .false.)
    code = check_key(self, key)
    if (code /= SRNoError) return
    call msg_init(m)
    call msg_add_str(m, key)
    call msg_add_str(m, trim(backend))
    call msg_add_str(m, device_name(device))
    if (present(tag)) then
      call msg_add_str(m, trim(tag))
    else
      call msg_add_str(m, '')
    end if
    call msg_add_u64(m, int(opt(batch_size), int64))
    call msg_add_u64(m, int(opt(min_batch_size), int64))
    call msg_add_u64(m, int(opt(min_batch_timeout), int64))
    code = set_everywhere(OP_SET_MODEL, KIND_MODEL, key, m, model)
  contains
    integer function opt(v)
      integer, intent(in), optional :: v
      opt = 0
      if (present(v)) opt = v
    end function
  end function

  !> "CPU", "GPU" ("GPU:0" etc. become "GPU": the servers pick their own GPU).
  function device_name(device) result(d)
    character(len=*), intent(in) :: device
    character(len=:), allocatable :: d
    d = trim(adjustl(device))
    if (len(d) >= 3) then
      if (d(1:3) == 'GPU') d = 'GPU'
    end if
  end function

  !> Store a TorchScript model file on every shard. backend "TORCH"; device "CPU" or "GPU".
  !> inputs/outputs (TensorFlow node names in SmartRedis) are accepted and ignored.
  integer(enum_kind) function set_model_from_file(self, name, model_file, backend, device, batch_size, &
       min_batch_size, min_batch_timeout, tag, inputs, outputs) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name, model_file, backend, device
    integer, intent(in), optional :: batch_size, min_batch_size, min_batch_timeout
    character(len=*), intent(in), optional :: tag
    character(len=*), dimension(:), intent(in), optional :: inputs, outputs
    integer(int8), allocatable :: bytes(:)
    call clear_error()
    if (present(inputs) .and. present(outputs)) continue
    code = read_file_bytes(model_file, bytes)
    if (code /= SRNoError) return
    code = set_model_bytes(self, name, bytes, backend, device, batch_size, min_batch_size, &
         min_batch_timeout, tag)
  end function

  !> Store a model held in a character string (the bytes of a TorchScript file).
  integer(enum_kind) function set_model(self, name, model, backend, device, batch_size, min_batch_size, &
       min_batch_timeout, tag, inputs, outputs) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name, model, backend, device
    integer, intent(in), optional :: batch_size, min_batch_size, min_batch_timeout
    character(len=*), intent(in), optional :: tag
    character(len=*), dimension(:), intent(in), optional :: inputs, outputs
    if (present(inputs) .and. present(outputs)) continue
    code = set_model_bytes(self, name, str_bytes(model), backend, device, batch_size, min_batch_size, &
         min_batch_timeout, tag)
  end function

  integer(enum_kind) function set_script_bytes(self, name, device, script) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name, device
    integer(int8), intent(in) :: script(:)
    character(len=:), allocatable :: key
    type(msg_t) :: m
    key = make_key(self, name, KIND_SCRIPT, .false.)
    code = check_key(self, key)
    if (code /= SRNoError) return
    call msg_init(m)
    call msg_add_str(m, key)
    call msg_add_str(m, device_name(device))
    code = set_everywhere(OP_SET_SCRIPT, KIND_SCRIPT, key, m, script)
  end function

  !> Store a TorchScript source file on every shard.
  integer(enum_kind) function set_script_from_file(self, name, device, script_file) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name, device, script_file
    integer(int8), allocatable :: bytes(:)
    call clear_error()
    code = read_file_bytes(script_file, bytes)
    if (code == SRNoError) code = set_script_bytes(self, name, device, bytes)
  end function

  !> Store TorchScript source text held in a character string.
  integer(enum_kind) function set_script(self, name, device, script) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name, device, script
    code = set_script_bytes(self, name, device, str_bytes(script))
  end function

  !> Send [name, (func,) u32 n_inputs, inputs..., outputs...] to the shard of the first input.
  integer(enum_kind) function run_start(self, op, kind, name, func, inputs, outputs, handle) result(code)
    class(client_type), intent(in) :: self
    integer, intent(in) :: op
    character(len=1), intent(in) :: kind
    character(len=*), intent(in) :: name, func
    character(len=*), dimension(:), intent(in) :: inputs, outputs
    type(run_handle), intent(out) :: handle
    character(len=:), allocatable :: key, first
    type(msg_t) :: m
    integer :: i
    key = make_key(self, name, kind, .true.)
    code = check_key(self, key)
    if (code == SRNoError .and. size(inputs) == 0) then
      call set_error('a run needs at least one input key')
      code = SRParameterError
    end if
    if (code /= SRNoError) then
      handle%finished = .true.
      handle%code = code
      handle%error = get_last_error()
      return
    end if
    call msg_init(m)
    call msg_add_str(m, key)
    if (op == OP_RUN_SCRIPT) call msg_add_str(m, trim(func))
    call msg_add_u32(m, size(inputs, kind=int64))
    first = make_key(self, inputs(1), KIND_TENSOR, .true.)
    do i = 1, size(inputs)
      call msg_add_str(m, make_key(self, inputs(i), KIND_TENSOR, .true.))
    end do
    do i = 1, size(outputs)
      call msg_add_str(m, make_key(self, outputs(i), KIND_TENSOR, .false.))
    end do
    handle%shard = shard(first)
    handle%seq = link_start(handle%shard, op, m, 0_int64)
  end function

  !> Run a stored model on input tensors, storing its outputs under the output keys (runs on
  !> the shard of the first input; requests arriving together may share one batched call).
  integer(enum_kind) function run_model(self, name, inputs, outputs) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    character(len=*), dimension(:), intent(in) :: inputs, outputs
    type(run_handle) :: h
    code = run_start(self, OP_RUN_MODEL, KIND_MODEL, name, '', inputs, outputs, h)
    code = h%wait()
  end function

  !> Start run_model and return at once; handle%wait() gives its status.
  integer(enum_kind) function run_model_async(self, name, inputs, outputs, handle) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    character(len=*), dimension(:), intent(in) :: inputs, outputs
    type(run_handle), intent(out) :: handle
    code = run_start(self, OP_RUN_MODEL, KIND_MODEL, name, '', inputs, outputs, handle)
  end function

  !> Run function func of a stored script on input tensors.
  integer(enum_kind) function run_script(self, name, func, inputs, outputs) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name, func
    character(len=*), dimension(:), intent(in) :: inputs, outputs
    type(run_handle) :: h
    code = run_start(self, OP_RUN_SCRIPT, KIND_SCRIPT, name, func, inputs, outputs, h)
    code = h%wait()
  end function

  integer(enum_kind) function run_script_async(self, name, func, inputs, outputs, handle) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name, func
    character(len=*), dimension(:), intent(in) :: inputs, outputs
    type(run_handle), intent(out) :: handle
    code = run_start(self, OP_RUN_SCRIPT, KIND_SCRIPT, name, func, inputs, outputs, handle)
  end function

  logical function run_done(self)
    class(run_handle), intent(in) :: self
    run_done = self%finished
    if (.not. run_done .and. self%seq >= 0) run_done = link_test(self%shard, self%seq)
  end function

  !> Wait for the run (at most timeout_ms when given: SRTimeoutError, the run goes on and can
  !> be waited for again). Polls with short sleeps, leaving the cores to the servers.
  integer(enum_kind) function run_wait(self, timeout_ms) result(code)
    class(run_handle), intent(inout) :: self
    integer, intent(in), optional :: timeout_ms
    type(reply_t) :: r
    integer :: spins, sleep_us
    integer(c_int) :: rc
    integer(int64) :: waited_us
    if (.not. self%finished) then
      if (self%seq < 0) then
        call set_error('this run handle was never started')
        code = SRInvalidError
        return
      end if
      spins = 0
      sleep_us = 0
      waited_us = 0
      do while (.not. link_test(self%shard, self%seq))
        if (present(timeout_ms)) then
          if (waited_us > 1000_int64 * timeout_ms) then
            call set_error('the run has not finished within ' // int_str(int(timeout_ms, int64)) // ' ms')
            code = SRTimeoutError
            return
          end if
        end if
        spins = spins + 1
        if (spins < 20) cycle
        sleep_us = min(1000, max(2 * sleep_us, 20))
        rc = c_usleep(int(sleep_us, c_int))
        waited_us = waited_us + sleep_us
      end do
      self%finished = .true.
      self%code = link_finish(self%shard, self%seq, r)
      self%error = ''
      if (self%code /= SRNoError) self%error = get_last_error()
    end if
    code = self%code
    if (code /= SRNoError) call set_error(self%error)
  end function

  !> DELETE of a tensor, dataset or list: one key on its own shard.
  integer(enum_kind) function delete_kind(self, kind, name) result(code)
    class(client_type), intent(in) :: self
    character(len=1), intent(in) :: kind
    character(len=*), intent(in) :: name
    character(len=:), allocatable :: key
    type(reply_t) :: r
    key = make_key(self, name, kind, .false.)
    code = check_key(self, key)
    if (code == SRNoError) code = keyed(OP_DELETE, kind, key, r)
    if (code == SRKeyError) then  ! a key that does not exist: no error (Redis's DEL, as SmartRedis)
      call clear_error()
      code = SRNoError
    end if
  end function

  !> Delete a model from every shard.
  integer(enum_kind) function delete_model(self, name) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    code = delete_everywhere(self, KIND_MODEL, name)
  end function

  integer(enum_kind) function delete_script(self, name) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    code = delete_everywhere(self, KIND_SCRIPT, name)
  end function

  !> DELETE of a model or script on every shard (each shard is asked, whatever the others
  !> answer); returns the first error.
  integer(enum_kind) function delete_everywhere(self, kind, name) result(code)
    class(client_type), intent(in) :: self
    character(len=1), intent(in) :: kind
    character(len=*), intent(in) :: name
    character(len=:), allocatable :: key
    integer :: nfailed
    key = make_key(self, name, kind, .true.)  ! the data-source (SSKEYIN) prefix, as SmartRedis
    code = check_key(self, key)
    if (code == SRNoError) code = every_shard(OP_DELETE, keyed_msg(kind, key), nfailed)
  end function

  !> The bytes of model `name` (as set) into model(1:n), blanks after them; model shorter than
  !> the model: SRBadAllocError. The data-source (SSKEYIN) prefix applies, as for run_model.
  integer(enum_kind) function get_model(self, name, model) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    character(len=*), intent(out) :: model
    integer(int8), allocatable :: bytes(:)
    type(reply_t) :: r
    integer :: s, seq
    model = ' '
    code = code_request(self, name, KIND_MODEL, OP_GET_MODEL, s, seq, r)
    if (code /= SRNoError) return
    allocate(bytes(r%payload_bytes))
    if (r%payload_bytes > 0) call link_recv_bytes(s, seq, bytes)
    code = fill_text(bytes, 'model "' // trim(name) // '"', model)
  end function

  !> The source of script `name` (as set) into script(1:n), blanks after it; script shorter
  !> than the source: SRBadAllocError.
  integer(enum_kind) function get_script(self, name, script) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    character(len=*), intent(out) :: script
    type(reply_t) :: r
    integer :: s, seq
    script = ' '
    code = code_request(self, name, KIND_SCRIPT, OP_GET_SCRIPT, s, seq, r)
    if (code /= SRNoError) return
    if (r%nfields /= 1 .or. r%payload_bytes /= 0) then
      call set_error('malformed GET_SCRIPT reply')
      code = SRInternalError
      if (r%payload_bytes > 0) call drain(s, seq, r%payload_bytes)
      return
    end if
    code = fill_text(field_bytes(r, 1), 'script "' // trim(name) // '"', script)
  end function

  !> A request whose one field is the key of model or script `name` (the SSKEYIN prefix), to
  !> that key's shard s; its reply in r (a payload, if any, then comes from shard s on tag seq).
  integer(enum_kind) function code_request(self, name, kind, op, s, seq, r) result(code)
    class(client_type), intent(in) :: self
    character(len=*), intent(in) :: name
    character(len=1), intent(in) :: kind
    integer, intent(in) :: op
    integer, intent(out) :: s, seq
    type(reply_t), intent(out) :: r
    character(len=:), allocatable :: key
    type(msg_t) :: m
    s = -1
    seq = -1
    key = make_key(self, name, kind, .true.)
    code = check_key(self, key)
    if (code /= SRNoError) return
    call msg_init(m)
    call msg_add_str(m, key)
    s = shard(key)
    seq = link_start(s, op, m, 0_int64)
    code = link_finish(s, seq, r)
  end function

  !> bytes into text(1:size(bytes)); SRBadAllocError when text is shorter.
  integer(enum_kind) function fill_text(bytes, what, text) result(code)
    integer(int8), intent(in) :: bytes(:)
    character(len=*), intent(in) :: what
    character(len=*), intent(inout) :: text
    code = SRNoError
    if (size(bytes) > len(text)) then
      call set_error(what // ' has ' // int_str(int(size(bytes), int64)) // ' bytes, the argument holds ' // &
           int_str(int(len(text), int64)))
      code = SRBadAllocError
      return
    end if
    if (size(bytes) > 0) text(1:size(bytes)) = bytes_str(bytes)
  end function

  ! ================================================================== ensemble prefixes
  !> Read keys with prefix source_id (one of $SSKEYIN).
  integer(enum_kind) function set_data_source(self, source_id) result(code)
    class(client_type), intent(inout) :: self
    character(len=*), intent(in) :: source_id
    character(len=:), allocatable :: list
    code = SRNoError
    list = ''
    if (allocated(self%get_prefixes)) list = self%get_prefixes
    if (index(',' // list // ',', ',' // trim(source_id) // ',') == 0) then
      call set_error('"' // trim(source_id) // '" is not in SSKEYIN (' // list // ')')
      code = SRParameterError
      return
    end if
    self%get_prefix = trim(source_id)
  end function

  include 'generated/client_procs.inc'

  ! ================================================================== dataset_type
  integer(enum_kind) function dataset_initialize(self, name) result(code)
    class(dataset_type), intent(inout) :: self
    character(len=*), intent(in) :: name
    call clear_error()
    if (len_trim(name) == 0) then
      call set_error('a dataset needs a non-empty name')
      code = SRParameterError
      return
    end if
    self%name = trim(name)
    if (allocated(self%tensors)) deallocate(self%tensors)
    if (allocated(self%meta)) deallocate(self%meta)
    allocate(self%tensors(0), self%meta(0))
    code = SRNoError
  end function

  function dataset_get_name(self) result(name)
    class(dataset_type), intent(in) :: self
    character(len=:), allocatable :: name
    name = ''
    if (allocated(self%name)) name = self%name
  end function

  !> Index of the item called name (trailing blanks trimmed) in items; 0 when none is.
  integer function find_named(items, name)
    class(named_t), intent(in) :: items(:)
    character(len=*), intent(in) :: name
    integer :: i
    find_named = 0
    do i = 1, size(items)
      if (items(i)%name == trim(name)) then
        find_named = i
        return
      end if
    end do
  end function

  integer function find_tensor(self, name)
    class(dataset_type), intent(in) :: self
    character(len=*), intent(in) :: name
    find_tensor = 0
    if (allocated(self%tensors)) find_tensor = find_named(self%tensors, name)
  end function

  integer function find_meta(self, name)
    class(dataset_type), intent(in) :: self
    character(len=*), intent(in) :: name
    find_meta = 0
    if (allocated(self%meta)) find_meta = find_named(self%meta, name)
  end function

  !> The names of items, as a character array as long as the longest.
  subroutine names_of(items, names)
    class(named_t), intent(in) :: items(:)
    character(len=:), allocatable, dimension(:), intent(out) :: names
    integer :: i, maxlen
    maxlen = 1
    do i = 1, size(items)
      maxlen = max(maxlen, len(items(i)%name))
    end do
    allocate(character(len=maxlen) :: names(size(items)))
    do i = 1, size(items)
      names(i) = items(i)%name
    end do
  end subroutine

  integer(enum_kind) function need_init(self) result(code)
    class(dataset_type), intent(in) :: self
    call clear_error()
    code = SRNoError
    if (.not. allocated(self%name)) then
      call set_error('the dataset is not initialized (call dataset%initialize(name) first)')
      code = SRParameterError
    end if
  end function

  integer(enum_kind) function dataset_add_raw(self, name, dtype, ptr, nelem, esize, dims) result(code)
    class(dataset_type), intent(inout) :: self
    character(len=*), intent(in) :: name
    integer, intent(in) :: dtype, esize
    type(c_ptr), intent(in) :: ptr
    integer(int64), intent(in) :: nelem
    integer, intent(in) :: dims(:)
    type(ds_tensor_t) :: t
    integer(int8), pointer :: src(:)
    integer :: i
    code = need_init(self)
    if (code /= SRNoError) return
    if (len_trim(name) == 0) then
      call set_error('a dataset tensor needs a non-empty name')
      code = SRParameterError
      return
    end if
    code = make_desc(dtype, dims, nelem, t%desc)
    if (code /= SRNoError) return
    t%name = trim(name)
    allocate(t%data(nelem * esize))
    if (nelem > 0) then
      call c_f_pointer(ptr, src, [nelem * esize])
      t%data = src
    end if
    i = find_tensor(self, name)
    if (i > 0) then
      self%tensors(i) = t
    else
      self%tensors = [self%tensors, t]
    end if
  end function

  integer(enum_kind) function dataset_unpack_raw(self, name, dtype, ptr, nelem, dims) result(code)
    class(dataset_type), intent(in) :: self
    character(len=*), intent(in) :: name
    integer, intent(in) :: dtype
    type(c_ptr), intent(in) :: ptr
    integer(int64), intent(in) :: nelem
    integer, intent(in) :: dims(:)
    integer :: i
    code = need_init(self)
    if (code /= SRNoError) return
    i = find_tensor(self, name)
    if (i == 0) then
      call set_error('dataset "' // self%name // '" has no tensor "' // trim(name) // '"')
      code = SRKeyError
      return
    end if
    code = check_target('tensor "' // trim(name) // '" of dataset "' // self%name // '"', &
         self%tensors(i)%desc, dtype, nelem, dims)
    if (code == SRNoError) call deliver(self%tensors(i)%desc, self%tensors(i)%data, ptr)
  end function

  !> Index (in i) of metadata field name to add a value of `kind` (scalars: of `dtype`) to,
  !> created empty when missing; an error when it holds the other kind or another dtype.
  integer(enum_kind) function field_to_add(self, name, kind, dtype, i) result(code)
    class(dataset_type), intent(inout) :: self
    character(len=*), intent(in) :: name
    integer, intent(in) :: kind, dtype
    integer, intent(out) :: i
    type(ds_meta_t) :: f
    i = 0
    code = need_init(self)
    if (code /= SRNoError) return
    i = find_meta(self, name)
    if (i == 0) then
      f%name = trim(name)
      f%kind = kind
      f%dtype = dtype
      f%n = 0
      allocate(f%values(0), f%slen(0))
      self%meta = [self%meta, f]
      i = size(self%meta)
    end if
    if (self%meta(i)%kind /= kind) then
      call set_error('metadata field "' // trim(name) // '" already holds ' // kind_word(self%meta(i)%kind))
      code = SRParameterError
    else
      code = check_meta_dtype(self%meta(i), dtype)
    end if
  end function

  !> Index (in i) of metadata field name holding `kind` (scalars: of `dtype`); an error otherwise.
  integer(enum_kind) function field_to_get(self, name, kind, dtype, i) result(code)
    class(dataset_type), intent(in) :: self
    character(len=*), intent(in) :: name
    integer, intent(in) :: kind, dtype
    integer, intent(out) :: i
    i = 0
    code = need_init(self)
    if (code /= SRNoError) return
    i = find_meta(self, name)
    if (i > 0) then
      if (self%meta(i)%kind == kind) then
        code = check_meta_dtype(self%meta(i), dtype)
        return
      end if
    end if
    call set_error('dataset "' // self%name // '" has no metadata ' // kind_word(kind) // ' "' // trim(name) // '"')
    code = SRKeyError
  end function

  function kind_word(kind) result(w)
    integer, intent(in) :: kind
    character(len=:), allocatable :: w
    w = merge('scalars', 'strings', kind == META_SCALAR)
  end function

  integer(enum_kind) function check_meta_dtype(f, dtype) result(code)
    type(ds_meta_t), intent(in) :: f
    integer, intent(in) :: dtype
    code = SRNoError
    if (f%kind == META_SCALAR .and. f%dtype /= dtype) then
      call set_error('metadata field "' // f%name // '" holds ' // dtype_name(f%dtype) // ', not ' // dtype_name(dtype))
      code = SRTypeError
    end if
  end function

  integer(enum_kind) function dataset_add_scalar_raw(self, name, dtype, bytes) result(code)
    class(dataset_type), intent(inout) :: self
    character(len=*), intent(in) :: name
    integer, intent(in) :: dtype
    integer(int8), intent(in) :: bytes(:)
    integer :: i
    code = field_to_add(self, name, META_SCALAR, dtype, i)
    if (code /= SRNoError) return
    self%meta(i)%values = [self%meta(i)%values, bytes]
    self%meta(i)%n = self%meta(i)%n + 1
  end function

  integer(enum_kind) function dataset_get_scalars_raw(self, name, dtype, raw) result(code)
    class(dataset_type), intent(in) :: self
    character(len=*), intent(in) :: name
    integer, intent(in) :: dtype
    integer(int8), allocatable, intent(out) :: raw(:)
    integer :: i
    code = field_to_get(self, name, META_SCALAR, dtype, i)
    if (code == SRNoError) raw = self%meta(i)%values
  end function

  !> Append a string to metadata field name.
  integer(enum_kind) function add_meta_string(self, name, meta) result(code)
    class(dataset_type), intent(inout) :: self
    character(len=*), intent(in) :: name, meta
    integer :: i
    code = field_to_add(self, name, META_STRING, 0, i)
    if (code /= SRNoError) return
    self%meta(i)%values = [self%meta(i)%values, str_bytes(trim(meta))]
    self%meta(i)%slen = [self%meta(i)%slen, int(len_trim(meta), int64)]
    self%meta(i)%n = self%meta(i)%n + 1
  end function

  !> All strings of metadata field name (meta is allocated here, length of the longest).
  integer(enum_kind) function get_meta_strings(self, name, meta) result(code)
    class(dataset_type), intent(in) :: self
    character(len=*), intent(in) :: name
    character(len=:), allocatable, dimension(:), intent(out) :: meta
    integer :: i, k, maxlen
    integer(int64) :: pos
    code = field_to_get(self, name, META_STRING, 0, i)
    if (code /= SRNoError) return
    maxlen = 1
    if (self%meta(i)%n > 0) maxlen = max(1, int(maxval(self%meta(i)%slen)))
    allocate(character(len=maxlen) :: meta(self%meta(i)%n))
    pos = 1
    do k = 1, self%meta(i)%n
      meta(k) = bytes_str(self%meta(i)%values(pos:pos + self%meta(i)%slen(k) - 1))
      pos = pos + self%meta(i)%slen(k)
    end do
  end function

  !> Names of the dataset's tensors.
  integer(enum_kind) function get_tensor_names(self, names) result(code)
    class(dataset_type), intent(in) :: self
    character(len=:), allocatable, dimension(:), intent(out) :: names
    code = need_init(self)
    if (code == SRNoError) call names_of(self%tensors, names)
  end function

  !> Names of the dataset's metadata fields.
  integer(enum_kind) function get_metadata_field_names(self, names) result(code)
    class(dataset_type), intent(in) :: self
    character(len=:), allocatable, dimension(:), intent(out) :: names
    code = need_init(self)
    if (code == SRNoError) call names_of(self%meta, names)
  end function

  !> docs/protocol.md, "Dataset metadata".
  function pack_metadata(ds) result(b)
    type(dataset_type), intent(in) :: ds
    integer(int8), allocatable :: b(:)
    integer :: i, k
    integer(int64) :: pos
    type(ds_meta_t) :: f
    integer :: nmeta
    nmeta = 0
    if (allocated(ds%meta)) nmeta = size(ds%meta)
    b = put_u32(int(nmeta, int64))
    do i = 1, nmeta
      f = ds%meta(i)
      b = [b, put_u32(int(len(f%name), int64)), str_bytes(f%name), int(f%kind, int8)]
      if (f%kind == META_SCALAR) then
        b = [b, int(f%dtype, int8), put_u32(int(f%n, int64)), f%values]
      else
        b = [b, put_u32(int(f%n, int64))]
        pos = 1
        do k = 1, f%n
          b = [b, put_u32(f%slen(k)), f%values(pos:pos + f%slen(k) - 1)]
          pos = pos + f%slen(k)
        end do
      end if
    end do
  end function

  subroutine unpack_metadata(b, ds, ok)
    integer(int8), intent(in) :: b(:)
    type(dataset_type), intent(inout) :: ds
    logical, intent(out) :: ok
    integer(int64) :: pos, n, count, nlen, k, slen
    integer :: i, isz
    type(ds_meta_t) :: f
    ok = .false.
    allocate(ds%meta(0))
    n = size(b, kind=int64)
    pos = 1
    if (n < 4) return
    count = get_u32(b, pos)
    pos = pos + 4
    do i = 1, int(count)
      if (pos + 3 > n) return
      nlen = get_u32(b, pos)
      pos = pos + 4
      if (pos + nlen > n) return
      f%name = bytes_str(b(pos:pos + nlen - 1))
      pos = pos + nlen
      f%kind = iand(int(b(pos)), 255)
      pos = pos + 1
      if (f%kind == META_SCALAR) then
        if (pos + 4 > n) return
        f%dtype = iand(int(b(pos)), 255)
        isz = dtype_size(f%dtype)
        if (isz == 0) return
        f%n = int(get_u32(b, pos + 1))
        pos = pos + 5
        if (pos + f%n * isz - 1 > n) return
        f%values = b(pos:pos + f%n * isz - 1)
        pos = pos + f%n * isz
        if (allocated(f%slen)) deallocate(f%slen)
      else if (f%kind == META_STRING) then
        if (pos + 3 > n) return
        f%n = int(get_u32(b, pos))
        pos = pos + 4
        f%dtype = 0
        allocate(f%slen(f%n))
        f%values = [integer(int8) ::]
        do k = 1, f%n
          if (pos + 3 > n) return
          slen = get_u32(b, pos)
          pos = pos + 4
          if (pos + slen - 1 > n) return
          f%slen(k) = slen
          f%values = [f%values, b(pos:pos + slen - 1)]
          pos = pos + slen
        end do
      else
        return
      end if
      ds%meta = [ds%meta, f]
      if (allocated(f%slen)) deallocate(f%slen)
    end do
    ok = pos == n + 1
  end subroutine

  include 'generated/dataset_procs.inc'

  include 'smartredis_procs.inc'

end module mpistage
