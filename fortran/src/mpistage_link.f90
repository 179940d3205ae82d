!> The one connection a Fortran process holds to the mpistage servers (shared by every
!> client_type in it): MPMD world split, MPI_Comm_connect or the spawn parent, session setup,
!> requests and replies, and the goodbye (BYE) that runs from MPI_Finalize through an attribute
!> cached on MPI_COMM_SELF. Also the last-error text. The Open MPI defaults and the singleton
!> test come from mpistage/mpienv.py (generated/open_mpi_env.inc).
module mpistage_link
  use mpi_f08
  use, intrinsic :: iso_fortran_env, only : int8, int32, int64, error_unit
  use, intrinsic :: iso_c_binding
  use mpistage_wire
  implicit none
  private

  ! SmartRedis's error codes (enum_fortran.inc)
  integer, parameter, public :: enum_kind = c_int
  integer(enum_kind), parameter, public :: SRNoError = 0, SRBadAllocError = 1, SRDatabaseError = 2, &
       SRInternalError = 3, SRRuntimeError = 4, SRParameterError = 5, SRTimeoutError = 6, &
       SRKeyError = 7, SRInvalidError = -1, SRTypeError = 9

  !> Link kinds: MPMD world split, connect (connection file + MPI_Comm_connect), spawned by the
  !> servers' launcher (MPI_Comm_get_parent). Connect and spawn links cross jobs: disconnected at goodbye.
  integer, parameter :: MODE_NONE = 0, MODE_MPMD = 1, MODE_CONNECT = 2, MODE_SPAWN = 3

  logical, save :: is_open = .false.
  logical, save :: mpmd_done = .false.
  logical, save :: we_initialized_mpi = .false.
  logical, save :: atexit_registered = .false.
  integer, save :: link_mode = MODE_NONE
  type(MPI_Comm), save :: inter, merged, app_comm
  type(MPI_Win), save :: win
  integer, save :: nshards_ = 0
  integer, save :: myrank = 0
  integer, save :: next_seq = SEQ_MIN
  integer(int64), save :: slot_bytes = 0
  logical, save :: have_app_comm = .false.
  integer(c_int), save :: lock_fd = -1
  character(len=:), allocatable, save :: last_error

  public :: link_open, link_close, link_nshards, link_app_comm, link_is_open
  public :: link_start, link_finish, link_recv_bytes, link_recv_ptr, link_request, link_send_ptr
  public :: set_error, clear_error, get_last_error, print_last_error, status_code
  public :: mpistage_finalize_at_exit, link_test

  ! Linux x86_64 values for open(2) and flock(2)
  integer(c_int), parameter :: O_WRONLY = 1, O_CREAT = 64, O_APPEND = 1024, LOCK_EX = 2, LOCK_UN = 8

  interface
    integer(c_int) function c_atexit(fn) bind(c, name='atexit')
      import :: c_int, c_funptr
      type(c_funptr), value :: fn
    end function
    integer(c_int) function c_open(path, flags, mode) bind(c, name='open')
      import :: c_int, c_char
      character(kind=c_char), intent(in) :: path(*)
      integer(c_int), value :: flags, mode
    end function
    integer(c_int) function c_flock(fd, op) bind(c, name='flock')
      import :: c_int
      integer(c_int), value :: fd, op
    end function
    integer(c_int) function c_close(fd) bind(c, name='close')
      import :: c_int
      integer(c_int), value :: fd
    end function
    integer(c_int) function c_setenv(name, value, overwrite) bind(c, name='setenv')
      import :: c_int, c_char
      character(kind=c_char), intent(in) :: name(*), value(*)
      integer(c_int), value :: overwrite
    end function
    integer(c_int) function c_usleep(usec) bind(c, name='usleep')
      import :: c_int
      integer(c_int), value :: usec
    end function
    type(c_funptr) function c_signal(sig, handler) bind(c, name='signal')
      import :: c_int, c_funptr
      integer(c_int), value :: sig
      type(c_funptr), value :: handler
    end function
    integer(c_int) function c_getpid() bind(c, name='getpid')
      import :: c_int
    end function
    integer(c_int) function c_gethostname(name, size) bind(c, name='gethostname')
      import :: c_int, c_char, c_size_t
      character(kind=c_char), intent(out) :: name(*)
      integer(c_size_t), value :: size
    end function
    integer(c_int) function c_raise(sig) bind(c, name='raise')
      import :: c_int
      integer(c_int), value :: sig
    end function
  end interface

  !> SIGTERM and SIGINT arriving during session setup take effect after it (as the Python client's
  !> bootstrap.signals_deferred): a process killed mid-setup stalls the servers' accept.
  integer(c_int), parameter :: SIGINT_ = 2, SIGTERM_ = 15
  integer(c_int), volatile, save :: deferred_signal = 0
  logical, save :: deferring = .false.
  type(c_funptr), save :: saved_term, saved_int

  !> Connect mode: how long the job waits for shard 0's verdict on its hello (as the Python client).
  double precision, parameter :: VERDICT_SECONDS = 60d0

  !> MPI's count is a C int: a payload part larger than this travels as several messages of at most
  !> this many bytes (protocol.py MAX_MESSAGE_BYTES; less with $MPISTAGE_MESSAGE_BYTES, a testing knob).
  integer(int64), parameter :: MAX_MESSAGE_BYTES = 2147483647_int64
  integer(int64), save :: message_bytes = 0
  !> Requests refused here before they were sent (their header was over MAX_HEADER_BYTES): the
  !> header's size by seq; link_finish answers them with the error instead of waiting for a reply.
  integer(int64), save :: refused(SEQ_MIN:SEQ_MAX) = 0

contains

  ! ------------------------------------------------------------------ errors
  subroutine set_error(text)
    character(len=*), intent(in) :: text
    last_error = text
  end subroutine

  subroutine clear_error()
    last_error = ''
  end subroutine

  !> Text describing the last failure of an mpistage call (empty when none).
  function get_last_error() result(text)
    character(len=:), allocatable :: text
    if (allocated(last_error)) then
      text = last_error
    else
      text = ''
    end if
  end function

  subroutine print_last_error()
    write (error_unit, '(a)') 'mpistage: ' // get_last_error()
  end subroutine

  !> The SmartRedis error code for a reply status.
  integer(enum_kind) function status_code(status)
    integer, intent(in) :: status
    select case (status)
    case (ST_OK); status_code = SRNoError
    case (ST_NOT_FOUND); status_code = SRKeyError
    case (ST_BAD_ARGUMENT); status_code = SRParameterError
    case (ST_STORE_FULL, ST_RUNTIME_ERROR, ST_UNKNOWN_OP); status_code = SRRuntimeError
    case default; status_code = SRInternalError
    end select
  end function

  ! ------------------------------------------------------------------ state
  logical function link_is_open()
    link_is_open = is_open
  end function

  integer function link_nshards()
    link_nshards = nshards_
  end function

  !> The application's communicator: in MPMD mode MPI_COMM_WORLD without the server ranks;
  !> otherwise MPI_COMM_WORLD. Opens the connection when needed (collective).
  function link_app_comm() result(comm)
    type(MPI_Comm) :: comm
    integer(enum_kind) :: code
    if (.not. have_app_comm) code = link_open()
    if (have_app_comm) then
      comm = app_comm
    else
      comm = MPI_COMM_WORLD
    end if
  end function

  ! ------------------------------------------------------------------ opening
  subroutine ensure_mpi()
    logical :: flag
    integer :: provided
    call MPI_Initialized(flag)
    if (flag) return
    call prepare_open_mpi()
    call MPI_Init_thread(MPI_THREAD_MULTIPLE, provided)
    we_initialized_mpi = .true.
    if (.not. atexit_registered) then
      if (c_atexit(c_funloc(mpistage_finalize_at_exit)) == 0) atexit_registered = .true.
    end if
  end subroutine

  !> Before mpistage starts MPI itself: the Open MPI settings the Python side applies (where
  !> unset), and, in a process started without mpiexec (a singleton), the ompi-server named in
  !> the connection file, so that MPI_Comm_connect reaches separately started servers.
  subroutine prepare_open_mpi()
    character(len=:), allocatable :: text, uri
    character(len=4096) :: path
    integer :: st, alen, code
    integer(c_int) :: rc
    call apply_open_mpi_defaults()
    if (started_by_mpiexec()) return  ! mpiexec passes the ompi-server itself
    call get_environment_variable('MPISTAGE_ADDRESS', value=path, length=alen, status=st)
    if (st /= 0 .or. alen == 0) return
    code = SRNoError
    call read_text_file(trim(path), text, code)
    if (code /= SRNoError) return
    uri = json_string(text, 'ompi_server_uri')
    if (len(uri) == 0) return
    rc = c_setenv('OMPI_MCA_pmix_server_uri' // c_null_char, 'file:' // uri // c_null_char, 0_c_int)
  end subroutine

  !> Registered with atexit when mpistage initialized MPI: finalizes it (which says goodbye
  !> to the servers through the MPI_COMM_SELF attribute).
  subroutine mpistage_finalize_at_exit() bind(c)
    logical :: init, fin
    call MPI_Initialized(init)
    call MPI_Finalized(fin)
    if (init .and. .not. fin .and. we_initialized_mpi) call MPI_Finalize()
  end subroutine

  !> Open the process's connection (collective over the application ranks). Order as in the
  !> Python client: spawned (MPISTAGE_SPAWNED=1 and a parent intercommunicator); MPMD when this
  !> program is not the first of an MPMD launch (MPI_APPNUM >= 1), so a stray MPISTAGE_ADDRESS
  !> cannot split the job; else connect with MPISTAGE_ADDRESS.
  integer(enum_kind) function link_open() result(code)
    character(len=:), allocatable :: address
    integer :: alen, st
    logical :: flag
    integer(MPI_ADDRESS_KIND) :: appnum
    type(MPI_Comm) :: parent
    code = SRNoError
    if (is_open) return
    if (.not. host_is_little_endian()) then
      call set_error('this mpistage Fortran client needs a little-endian host')
      code = SRInternalError
      return
    end if
    call ensure_mpi()
    appnum = -1
    call MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, appnum, flag)
    if (spawned(parent)) then
      ! the parent intercommunicator is the link: its remote rank i is shard i
      inter = parent
      app_comm = MPI_COMM_WORLD
      have_app_comm = .true.
      link_mode = MODE_SPAWN
      call say_hello(inter)
      call setup_session()
    else if (flag .and. appnum >= 1) then
      if (mpmd_done) then
        call set_error('this rank has already said goodbye to the MPMD servers')
        code = SRDatabaseError
        return
      end if
      code = open_mpmd()
      if (code /= SRNoError) return
      call say_hello(inter)
      call setup_session()
    else
      call get_environment_variable('MPISTAGE_ADDRESS', length=alen, status=st)
      if (st /= 0 .or. alen == 0) then
        call set_error('no servers: start this program after the servers in one MPMD job ' // &
             '(mpiexec -n 2 mpistage-server : -n 4 ./app), or set MPISTAGE_ADDRESS')
        code = SRDatabaseError
        return
      end if
      allocate(character(len=alen) :: address)
      call get_environment_variable('MPISTAGE_ADDRESS', value=address)
      code = open_connect(address)
      if (code /= SRNoError) then
        call undefer_signals()
        return
      end if
      call setup_session()
      call unlock_connect()
      call undefer_signals()
    end if
    call register_goodbye()
    is_open = .true.
  end function

  !> True in a job the servers' launcher spawned: MPISTAGE_SPAWNED is 1 and there is a parent.
  logical function spawned(parent)
    type(MPI_Comm), intent(out) :: parent
    character(len=1) :: value
    integer :: n, st
    spawned = .false.
    parent = MPI_COMM_NULL
    call get_environment_variable('MPISTAGE_SPAWNED', value=value, length=n, status=st)
    if (st /= 0 .or. n /= 1 .or. value /= '1') return
    call MPI_Comm_get_parent(parent)
    spawned = parent /= MPI_COMM_NULL
  end function

  integer(enum_kind) function open_mpmd() result(code)
    integer :: wrank, wsize, i, leader
    integer(int32), allocatable :: colors(:)
    type(MPI_Comm) :: local
    code = SRNoError
    call MPI_Comm_rank(MPI_COMM_WORLD, wrank)
    call MPI_Comm_size(MPI_COMM_WORLD, wsize)
    call MPI_Comm_split(MPI_COMM_WORLD, ROLE_APP, wrank, local)
    allocate(colors(wsize))
    call MPI_Allgather([int(ROLE_APP, int32)], 1, MPI_INTEGER4, colors, 1, MPI_INTEGER4, MPI_COMM_WORLD)
    leader = -1
    do i = 1, wsize
      if (colors(i) /= ROLE_APP) then
        leader = i - 1
        exit
      end if
    end do
    app_comm = local
    have_app_comm = .true.
    if (leader < 0) then
      call set_error('this MPMD job has no server ranks')
      code = SRDatabaseError
      return
    end if
    call MPI_Intercomm_create(local, 0, MPI_COMM_WORLD, leader, INTERCOMM_TAG, inter)
    link_mode = MODE_MPMD
  end function

  integer(enum_kind) function open_connect(path) result(code)
    character(len=*), intent(in) :: path
    character(len=:), allocatable :: text, port, secret, reason
    integer :: shards, protocol, rsize, verdict
    type(MPI_Comm) :: first, bridge
    code = SRNoError
    call read_text_file(path, text, code)
    if (code /= SRNoError) return
    port = json_string(text, 'port')
    secret = json_string(text, 'secret')
    shards = json_int(text, 'shards')
    protocol = json_int(text, 'protocol')
    if (len(port) == 0 .or. shards < 1) then
      call set_error(path // ' is not an mpistage connection file')
      code = SRDatabaseError
      return
    end if
    if (protocol /= PROTOCOL_VERSION) then
      call set_error('servers speak protocol ' // int_str(int(protocol, int64)) // &
           ', this client speaks ' // int_str(int(PROTOCOL_VERSION, int64)))
      code = SRDatabaseError
      return
    end if
    call lock_connect(path)
    call defer_signals()
    ! Only shard 0 accepts; after the hello the link is widened to every shard (protocol.md §1).
    call MPI_Comm_connect(port, MPI_INFO_NULL, 0, MPI_COMM_WORLD, first)
    call say_connect_hello(first, secret, verdict, reason)
    if (verdict /= 0) then
      call set_error('the servers refused this job: ' // reason)
      call MPI_Comm_free(first)  ! not disconnect: shard 0 has let go of it already
      call unlock_connect()
      code = SRDatabaseError
      return
    end if
    call MPI_Intercomm_merge(first, .true., bridge)
    call MPI_Intercomm_create(MPI_COMM_WORLD, 0, bridge, 0, WIDEN_TAG, inter)
    call MPI_Comm_free(bridge)
    call MPI_Comm_free(first)
    call MPI_Comm_remote_size(inter, rsize)
    if (rsize /= shards) then
      call set_error('connected to ' // int_str(int(rsize, int64)) // ' server ranks, the address says ' &
           // int_str(int(shards, int64)))
      call unlock_connect()
      code = SRDatabaseError
      return
    end if
    app_comm = MPI_COMM_WORLD
    have_app_comm = .true.
    link_mode = MODE_CONNECT
  end function

  !> As the Python client (bootstrap.connect_lock): rank 0 of the connecting job holds flock on
  !> <address>.lock from MPI_Comm_connect to the end of session setup, because Open MPI 4.1
  !> pairs up two jobs connecting to one port at the same moment wrongly.
  subroutine lock_connect(path)
    character(len=*), intent(in) :: path
    integer :: wrank
    integer(c_int) :: rc
    call MPI_Comm_rank(MPI_COMM_WORLD, wrank)
    if (wrank /= 0) return
    lock_fd = c_open(path // '.lock' // c_null_char, ior(O_WRONLY, ior(O_CREAT, O_APPEND)), 420_c_int)
    if (lock_fd >= 0) rc = c_flock(lock_fd, LOCK_EX)
  end subroutine

  subroutine unlock_connect()
    integer(c_int) :: rc
    if (lock_fd < 0) return
    rc = c_flock(lock_fd, LOCK_UN)
    rc = c_close(lock_fd)
    lock_fd = -1
  end subroutine

  !> docs/protocol.md, "Session setup": hello, merge (high), slot_bytes, a 0-byte window when slot_bytes > 0.
  !> The client group's hello on an intercommunicator: {protocol version, PURPOSE_CLIENT} from rank 0.
  subroutine say_hello(comm)
    type(MPI_Comm), intent(in) :: comm
    integer(int32) :: hello(2)
    integer :: root, rank
    call MPI_Comm_rank(comm, rank)
    hello = [int(PROTOCOL_VERSION, int32), int(PURPOSE_CLIENT, int32)]
    root = MPI_PROC_NULL
    if (rank == 0) root = MPI_ROOT
    call MPI_Bcast(hello, 2, MPI_INTEGER4, root, comm)
  end subroutine

  subroutine on_deferred_signal(sig) bind(c)
    integer(c_int), value :: sig
    deferred_signal = sig
  end subroutine

  subroutine defer_signals()
    deferred_signal = 0
    saved_term = c_signal(SIGTERM_, c_funloc(on_deferred_signal))
    saved_int = c_signal(SIGINT_, c_funloc(on_deferred_signal))
    deferring = .true.
  end subroutine

  !> Put the handlers back and deliver a signal that came meanwhile.
  subroutine undefer_signals()
    type(c_funptr) :: previous
    integer(c_int) :: rc
    if (.not. deferring) return
    deferring = .false.
    previous = c_signal(SIGTERM_, saved_term)
    previous = c_signal(SIGINT_, saved_int)
    if (deferred_signal /= 0) rc = c_raise(deferred_signal)
  end subroutine

  !> Connect mode's hello (docs/protocol.md, "connect"): rank 0 sends {protocol version,
  !> PURPOSE_CLIENT, the deployment secret, and when every rank runs on one host: NUL, the host's
  !> name, NUL, each rank's pid as int32} to shard 0 on `first` (HELLO_TAG) and waits at most
  !> VERDICT_SECONDS for the verdict {int32 code, reason}; every rank gets the code (0: admitted).
  subroutine say_connect_hello(first, secret, verdict, reason)
    type(MPI_Comm), intent(in) :: first
    character(len=*), intent(in) :: secret
    integer, intent(out) :: verdict
    character(len=:), allocatable, intent(out) :: reason
    integer(int8), allocatable :: hello(:)
    integer(int8) :: answer(HELLO_MAX_BYTES)
    integer(int32) :: head(2)
    integer :: wrank, n, i
    logical :: done
    integer(c_int) :: rc
    double precision :: deadline
    type(MPI_Request) :: req
    type(MPI_Status) :: st
    call MPI_Comm_rank(MPI_COMM_WORLD, wrank)
    call hello_bytes(secret, hello)
    head = [-1_int32, 0_int32]  ! code, reason length
    if (wrank == 0) then
      call MPI_Send(hello, size(hello), MPI_BYTE, 0, HELLO_TAG, first)
      call MPI_Irecv(answer, HELLO_MAX_BYTES, MPI_BYTE, 0, HELLO_TAG, first, req)
      deadline = MPI_Wtime() + VERDICT_SECONDS
      done = .false.
      do while (.not. done .and. MPI_Wtime() < deadline)
        call MPI_Test(req, done, st)
        if (.not. done) rc = c_usleep(2000_c_int)
      end do
      if (done) then
        call MPI_Get_count(st, MPI_BYTE, n)
        if (n >= 4) head = [transfer(answer(1:4), head(1)), int(n - 4, int32)]
      else
        call MPI_Cancel(req)
        call MPI_Wait(req, st)
        head = [1_int32, 0_int32]
      end if
    end if
    call MPI_Bcast(head, 2, MPI_INTEGER4, 0, MPI_COMM_WORLD)
    if (head(2) > 0) call MPI_Bcast(answer(5:4 + head(2)), int(head(2)), MPI_BYTE, 0, MPI_COMM_WORLD)
    verdict = int(head(1))
    allocate(character(len=head(2)) :: reason)
    do i = 1, int(head(2))
      reason(i:i) = achar(iand(int(answer(i + 4)), 255))
    end do
    if (verdict /= 0 .and. head(2) == 0) reason = 'no verdict within 60 s, or an unreadable one'
  end subroutine

  !> Collective over MPI_COMM_WORLD: the connect hello rank 0 sends (as mpistage/_mpi/links.py
  !> ConnectHello); the host and pids are left out when the ranks run on several hosts or do not fit.
  subroutine hello_bytes(secret, hello)
    character(len=*), intent(in) :: secret
    integer(int8), allocatable, intent(out) :: hello(:)
    integer, parameter :: HOST_BYTES = 256
    character(kind=c_char) :: name(HOST_BYTES)
    integer(int8) :: host(HOST_BYTES)
    integer(int8), allocatable :: hosts(:, :)
    integer(int32) :: pid(1)
    integer(int32), allocatable :: pids(:)
    integer :: wrank, wsize, hl, i
    call MPI_Comm_rank(MPI_COMM_WORLD, wrank)
    call MPI_Comm_size(MPI_COMM_WORLD, wsize)
    name = c_null_char
    if (c_gethostname(name, int(HOST_BYTES - 1, c_size_t)) /= 0) name = c_null_char
    host = transfer(name, host)
    host(HOST_BYTES) = 0
    pid(1) = int(c_getpid(), int32)
    allocate(hosts(HOST_BYTES, wsize), pids(wsize))
    call MPI_Gather(host, HOST_BYTES, MPI_BYTE, hosts, HOST_BYTES, MPI_BYTE, 0, MPI_COMM_WORLD)
    call MPI_Gather(pid, 1, MPI_INTEGER4, pids, 1, MPI_INTEGER4, 0, MPI_COMM_WORLD)
    allocate(hello(8 + len(secret)))
    if (wrank /= 0) return
    hello(1:4) = transfer(int(PROTOCOL_VERSION, int32), hello(1:4))
    hello(5:8) = transfer(int(PURPOSE_CLIENT, int32), hello(5:8))
    do i = 1, len(secret)
      hello(8 + i) = int(ichar(secret(i:i)), int8)
    end do
    hl = findloc(host, 0_int8, dim=1) - 1
    if (hl < 1 .or. size(hello) + 2 + hl + 4 * wsize > HELLO_MAX_BYTES) return
    do i = 2, wsize
      if (any(hosts(:, i) /= hosts(:, 1))) return
    end do
    hello = [hello, 0_int8, host(1:hl), 0_int8, transfer(pids, hello)]
  end subroutine

  !> Merged communicator and window (the hello has been said).
  subroutine setup_session()
    integer(int64) :: slot(1)
    type(c_ptr) :: base
    call MPI_Comm_rank(inter, myrank)
    call MPI_Comm_remote_size(inter, nshards_)
    call MPI_Intercomm_merge(inter, .true., merged)
    slot = 0
    call MPI_Bcast(slot, 1, MPI_INTEGER8, 0, merged)
    slot_bytes = slot(1)
    ! no window when the servers offer no slots (MPMD): an unused window still costs every MPI call
    if (slot_bytes > 0) call MPI_Win_allocate(0_MPI_ADDRESS_KIND, 1, MPI_INFO_NULL, merged, base, win)
  end subroutine

  !> Cache an attribute on MPI_COMM_SELF whose delete callback says goodbye: MPI_Finalize
  !> deletes MPI_COMM_SELF's attributes first thing, while MPI is still fully usable.
  subroutine register_goodbye()
    integer, save :: keyval = -1
    if (keyval /= -1) return
    call MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, goodbye_callback, keyval, 0_MPI_ADDRESS_KIND)
    call MPI_Comm_set_attr(MPI_COMM_SELF, keyval, 1_MPI_ADDRESS_KIND)
  end subroutine

  subroutine goodbye_callback(comm, comm_keyval, attribute_val, extra_state, ierror)
    type(MPI_Comm) :: comm
    integer :: comm_keyval, ierror
    integer(kind=MPI_ADDRESS_KIND) :: attribute_val, extra_state
    integer(enum_kind) :: code
    code = link_close()
    ierror = MPI_SUCCESS
  end subroutine

  !> Say BYE to every shard, then free the window, the merged communicator and the
  !> intercommunicator (collective over the application ranks and the servers).
  integer(enum_kind) function link_close() result(code)
    type(reply_t) :: r
    type(msg_t) :: m
    integer :: s
    code = SRNoError
    if (.not. is_open) return
    do s = 0, nshards_ - 1
      call msg_init(m)
      code = link_request(s, OP_BYE, m, r)
    end do
    is_open = .false.
    if (slot_bytes > 0) call MPI_Win_free(win)
    call MPI_Comm_free(merged)
    if (link_mode == MODE_CONNECT .or. link_mode == MODE_SPAWN) then
      call MPI_Comm_disconnect(inter)
    else
      call MPI_Comm_free(inter)
      mpmd_done = .true.
    end if
  end function

  ! ------------------------------------------------------------------ requests
  !> Send a request (header + fields) to `shard`; returns its seq. Payload parts follow with
  !> link_send_ptr.
  integer function link_start(shard, op, m, payload_bytes) result(seq)
    integer, intent(in) :: shard, op
    type(msg_t), intent(inout) :: m
    integer(int64), intent(in) :: payload_bytes
    seq = next_seq
    next_seq = next_seq + 1
    if (next_seq > SEQ_MAX) next_seq = SEQ_MIN
    call msg_finish(m, op, seq, payload_bytes, 0)
    refused(seq) = 0
    if (m%n > MAX_HEADER_BYTES) then  ! the server would discard it unanswered
      refused(seq) = m%n
      return
    end if
    call MPI_Send(m%b, int(m%n), MPI_BYTE, shard, TAG_REQUEST, inter)
  end function

  !> The largest message this process makes of a payload part.
  integer(int64) function message_limit()
    character(len=32) :: text
    integer :: n, ios
    if (message_bytes == 0) then
      message_bytes = MAX_MESSAGE_BYTES
      call get_environment_variable('MPISTAGE_MESSAGE_BYTES', text, n)
      if (n > 0 .and. n <= len(text)) then
        read (text(1:n), *, iostat=ios) message_bytes
        if (ios /= 0) message_bytes = MAX_MESSAGE_BYTES
        message_bytes = min(MAX_MESSAGE_BYTES, max(1_int64, message_bytes))
      end if
    end if
    message_limit = message_bytes
  end function

  !> Send one payload part of `nbytes` bytes at `ptr` for the request `seq` (on its payload tag,
  !> TAG_PAYLOAD + seq), as messages of at most message_limit() bytes, in order.
  subroutine link_send_ptr(shard, seq, ptr, nbytes)
    integer, intent(in) :: shard, seq
    type(c_ptr), intent(in) :: ptr
    integer(int64), intent(in) :: nbytes
    integer(int8), pointer :: p(:)
    integer(int64) :: off, n
    if (nbytes <= 0 .or. refused(seq) /= 0) return
    call c_f_pointer(ptr, p, [nbytes])
    off = 0
    do while (off < nbytes)
      n = min(message_limit(), nbytes - off)
      call MPI_Send(p(off + 1:off + n), int(n), MPI_BYTE, shard, TAG_PAYLOAD + seq, inter)
      off = off + n
    end do
  end subroutine

  !> Receive the reply to `seq`; a non-OK status sets the last error and returns its code.
  integer(enum_kind) function link_finish(shard, seq, r) result(code)
    integer, intent(in) :: shard, seq
    type(reply_t), intent(out) :: r
    type(MPI_Message) :: msg
    type(MPI_Status) :: status
    integer :: n
    integer(int8), allocatable :: buf(:)
    character(len=:), allocatable :: err
    if (refused(seq) /= 0) then
      call set_error('a request of ' // int_str(refused(seq)) // ' bytes (header and fields) is more than the limit ' &
           // int_str(int(MAX_HEADER_BYTES, int64)) // ': not sent')
      refused(seq) = 0
      code = SRParameterError
      return
    end if
    call MPI_Mprobe(shard, seq, inter, msg, status)
    call MPI_Get_count(status, MPI_BYTE, n)
    allocate(buf(n))
    call MPI_Mrecv(buf, n, MPI_BYTE, msg, status)
    call parse_reply(buf, r, err)
    if (len(err) > 0) then
      call set_error('malformed reply: ' // err)
      code = SRInternalError
      return
    end if
    code = status_code(r%status)
    if (code /= SRNoError) then
      if (r%nfields >= 1) then
        call set_error(field_str(r, 1))
      else
        call set_error('server error (status ' // int_str(int(r%status, int64)) // ')')
      end if
    end if
  end function

  !> True when the reply to `seq` has arrived (link_finish will not wait).
  logical function link_test(shard, seq)
    integer, intent(in) :: shard, seq
    link_test = refused(seq) /= 0
    if (.not. link_test) call MPI_Iprobe(shard, seq, inter, link_test, MPI_STATUS_IGNORE)
  end function

  !> Receive one reply payload part into `nbytes` bytes at `ptr`.
  subroutine link_recv_ptr(shard, seq, ptr, nbytes)
    integer, intent(in) :: shard, seq
    type(c_ptr), intent(in) :: ptr
    integer(int64), intent(in) :: nbytes
    integer(int8), pointer :: p(:)
    if (nbytes <= 0) return
    call c_f_pointer(ptr, p, [nbytes])
    call link_recv_bytes(shard, seq, p)
  end subroutine

  !> Receive one reply payload part into `buf`: as many messages as the server split it into
  !> (each at most MAX_MESSAGE_BYTES), in order.
  subroutine link_recv_bytes(shard, seq, buf)
    integer, intent(in) :: shard, seq
    integer(int8), intent(inout) :: buf(:)
    integer(int64) :: off, nbytes
    integer :: got
    type(MPI_Status) :: status
    nbytes = size(buf, kind=int64)
    off = 0
    do while (off < nbytes)
      call MPI_Recv(buf(off + 1:), int(min(MAX_MESSAGE_BYTES, nbytes - off)), MPI_BYTE, shard, seq, inter, status)
      call MPI_Get_count(status, MPI_BYTE, got)
      if (got <= 0) exit  ! an empty message would never end the part: nothing more comes
      off = off + got
    end do
  end subroutine

  !> A request without payload either way: send, wait, return the status code.
  integer(enum_kind) function link_request(shard, op, m, r) result(code)
    integer, intent(in) :: shard, op
    type(msg_t), intent(inout) :: m
    type(reply_t), intent(out) :: r
    integer :: seq
    seq = link_start(shard, op, m, 0_int64)
    code = link_finish(shard, seq, r)
  end function

  ! ------------------------------------------------------------------ Open MPI environment
  include 'generated/open_mpi_env.inc'

  ! ------------------------------------------------------------------ connection file
  subroutine read_text_file(path, text, code)
    character(len=*), intent(in) :: path
    character(len=:), allocatable, intent(out) :: text
    integer(enum_kind), intent(out) :: code
    integer :: u, ios
    integer(int64) :: sz
    code = SRNoError
    open (newunit=u, file=path, access='stream', form='unformatted', status='old', action='read', iostat=ios)
    if (ios /= 0) then
      call set_error('no connection file at ' // path // ': are the servers running?')
      code = SRDatabaseError
      text = ''
      return
    end if
    inquire (unit=u, size=sz)
    allocate(character(len=sz) :: text)
    if (sz > 0) read (u, iostat=ios) text
    close (u)
  end subroutine

  !> The value of a string member "name": "..." in a flat JSON object (\" \\ \/ unescaped).
  function json_string(text, name) result(value)
    character(len=*), intent(in) :: text, name
    character(len=:), allocatable :: value
    integer :: p, i
    value = ''
    p = json_value_start(text, name)
    if (p == 0) return
    if (text(p:p) /= '"') return
    i = p + 1
    do while (i <= len(text))
      if (text(i:i) == '\') then
        if (i < len(text)) value = value // text(i+1:i+1)
        i = i + 2
      else if (text(i:i) == '"') then
        return
      else
        value = value // text(i:i)
        i = i + 1
      end if
    end do
  end function

  integer function json_int(text, name)
    character(len=*), intent(in) :: text, name
    integer :: p, e, ios
    json_int = -1
    p = json_value_start(text, name)
    if (p == 0) return
    e = p
    do while (e <= len(text))
      if (index('-0123456789', text(e:e)) == 0) exit
      e = e + 1
    end do
    if (e == p) return
    read (text(p:e-1), *, iostat=ios) json_int
    if (ios /= 0) json_int = -1
  end function

  !> Index of the first non-blank character after `"name"` and its colon; 0 when absent.
  integer function json_value_start(text, name) result(p)
    character(len=*), intent(in) :: text, name
    p = index(text, '"' // name // '"')
    if (p == 0) return
    p = p + len(name) + 2
    do while (p <= len(text))
      if (text(p:p) /= ' ' .and. text(p:p) /= achar(9) .and. text(p:p) /= achar(10) &
           .and. text(p:p) /= achar(13)) exit
      p = p + 1
    end do
    if (p > len(text)) then
      p = 0
      return
    end if
    if (text(p:p) /= ':') then
      p = 0
      return
    end if
    p = p + 1
    do while (p <= len(text))
      if (text(p:p) /= ' ' .and. text(p:p) /= achar(9) .and. text(p:p) /= achar(10) &
           .and. text(p:p) /= achar(13)) exit
      p = p + 1
    end do
    if (p > len(text)) p = 0
  end function

end module mpistage_link
