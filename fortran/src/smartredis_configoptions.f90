!> SmartRedis's configoptions_type: settings read from environment variables (with an optional
!> suffix: option NAME is read from NAME_suffix) plus per-object overrides. Pure Fortran; the
!> status codes are SmartRedis's (enum_fortran.inc).
module smartredis_configoptions
  use, intrinsic :: iso_c_binding, only : c_char, c_int, c_int64_t, c_null_char
  implicit none
  private

  public :: ssdb_to_address

  interface
    integer(c_int) function c_setenv(name, value, overwrite) bind(c, name='setenv')
      import :: c_char, c_int
      character(kind=c_char), dimension(*), intent(in) :: name, value
      integer(c_int), value :: overwrite
    end function
  end interface

  integer, parameter :: enum_kind = c_int
  integer(enum_kind), parameter :: SRNoError = 0, SRRuntimeError = 4, SRParameterError = 5, SRKeyError = 7

  type :: override_t
    character(len=:), allocatable :: name, value
  end type

  !> Where a client takes its settings from (create_configoptions_from_environment first).
  type, public :: configoptions_type
    private
    logical :: created = .false.
    character(len=:), allocatable :: suffix
    type(override_t), allocatable :: overrides(:)
  contains
    procedure :: create_configoptions_from_environment
    procedure :: get_integer_option, get_string_option, is_configured
    procedure :: override_integer_option, override_string_option
  end type

contains

  !> SmartRedis's SSDB names the servers' connection file: when MPISTAGE_ADDRESS is unset and
  !> SSDB is set, MPISTAGE_ADDRESS becomes SSDB's first entry (called before connecting).
  subroutine ssdb_to_address()
    character(len=:), allocatable :: ssdb
    integer :: length, stat, cut
    call get_environment_variable('MPISTAGE_ADDRESS', length=length, status=stat)
    if (stat == 0 .and. length > 0) return
    call get_environment_variable('SSDB', length=length, status=stat)
    if (stat /= 0 .or. length == 0) return
    allocate(character(len=length) :: ssdb)
    call get_environment_variable('SSDB', ssdb)
    cut = scan(ssdb, ',;')
    if (cut > 0) ssdb = ssdb(:cut - 1)
    stat = c_setenv('MPISTAGE_ADDRESS' // c_null_char, trim(adjustl(ssdb)) // c_null_char, 1_c_int)
  end subroutine

  !> Read options from the environment, "_" // db_suffix appended to each name (none when empty).
  integer(enum_kind) function create_configoptions_from_environment(self, db_suffix) result(code)
    class(configoptions_type), intent(inout) :: self
    character(len=*), intent(in) :: db_suffix
    self%created = .true.
    self%suffix = trim(db_suffix)
    allocate(self%overrides(0))
    code = SRNoError
  end function

  !> The value of option_name: an override, else the environment; found false when neither.
  integer(enum_kind) function lookup(self, option_name, value, found) result(code)
    class(configoptions_type), intent(in) :: self
    character(len=*), intent(in) :: option_name
    character(len=:), allocatable, intent(out) :: value
    logical, intent(out) :: found
    character(len=:), allocatable :: variable
    integer :: i, length, stat
    found = .false.
    value = ''
    code = SRRuntimeError
    if (.not. self%created) return
    code = SRNoError
    do i = 1, size(self%overrides)
      if (self%overrides(i)%name == trim(option_name)) then
        value = self%overrides(i)%value
        found = .true.
        return
      end if
    end do
    variable = trim(option_name)
    if (len(self%suffix) > 0) variable = variable // '_' // self%suffix
    call get_environment_variable(variable, length=length, status=stat)
    if (stat /= 0) return
    deallocate(value)
    allocate(character(len=length) :: value)
    call get_environment_variable(variable, value)
    found = .true.
  end function

  !> The option as an integer; SRKeyError when it is not set, SRParameterError when not a number.
  integer(enum_kind) function get_integer_option(self, option_name, result) result(code)
    class(configoptions_type), intent(in) :: self
    character(len=*), intent(in) :: option_name
    integer(c_int64_t), intent(inout) :: result
    character(len=:), allocatable :: value
    logical :: found
    integer :: stat
    code = lookup(self, option_name, value, found)
    if (code /= SRNoError) return
    if (.not. found) then
      code = SRKeyError
      return
    end if
    read (value, *, iostat=stat) result
    if (stat /= 0) code = SRParameterError
  end function

  !> The option's text; SRKeyError when it is not set.
  integer(enum_kind) function get_string_option(self, option_name, result) result(code)
    class(configoptions_type), intent(in) :: self
    character(len=*), intent(in) :: option_name
    character(len=:), allocatable, intent(out) :: result
    logical :: found
    code = lookup(self, option_name, result, found)
    if (code == SRNoError .and. .not. found) code = SRKeyError
  end function

  !> Whether the option is set (by an override or in the environment).
  integer(enum_kind) function is_configured(self, option_name, result) result(code)
    class(configoptions_type), intent(in) :: self
    character(len=*), intent(in) :: option_name
    logical, intent(inout) :: result
    character(len=:), allocatable :: value
    code = lookup(self, option_name, value, result)
  end function

  integer(enum_kind) function set_override(self, option_name, value) result(code)
    class(configoptions_type), intent(inout) :: self
    character(len=*), intent(in) :: option_name, value
    integer :: i
    code = SRRuntimeError
    if (.not. self%created) return
    code = SRNoError
    do i = 1, size(self%overrides)
      if (self%overrides(i)%name == trim(option_name)) then
        self%overrides(i)%value = value
        return
      end if
    end do
    self%overrides = [self%overrides, override_t(trim(option_name), value)]
  end function

  !> Set the option for this object only.
  integer(enum_kind) function override_integer_option(self, option_name, value) result(code)
    class(configoptions_type), intent(inout) :: self
    character(len=*), intent(in) :: option_name
    integer(c_int64_t), intent(in) :: value
    character(len=24) :: text
    write (text, '(i0)') value
    code = set_override(self, option_name, trim(text))
  end function

  !> Set the option for this object only.
  integer(enum_kind) function override_string_option(self, option_name, value) result(code)
    class(configoptions_type), intent(inout) :: self
    character(len=*), intent(in) :: option_name, value
    code = set_override(self, option_name, trim(value))
  end function
end module smartredis_configoptions
