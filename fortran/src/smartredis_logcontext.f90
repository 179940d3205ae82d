!> SmartRedis's logcontext_type: a name to log under (initialize(context), then
!> log_data/log_warning/log_error(level, data) as in smartredis_logger).
module smartredis_logcontext
  use smartredis_logger, only : enum_kind, log_line
  implicit none
  private

  type, public :: logcontext_type
    private
    character(len=:), allocatable :: context
  contains
    procedure :: initialize => logcontext_initialize
    procedure :: log_data => context_log_data, log_warning => context_log_warning, log_error => context_log_error
  end type

contains

  integer(enum_kind) function logcontext_initialize(self, context) result(code)
    class(logcontext_type), intent(inout) :: self
    character(len=*), intent(in) :: context
    self%context = trim(context)
    code = 0
  end function

  subroutine context_log_data(self, level, data)
    class(logcontext_type), intent(in) :: self
    integer(enum_kind), intent(in) :: level
    character(len=*), intent(in) :: data
    call log_line(name_of(self), level, '', data)
  end subroutine

  subroutine context_log_warning(self, level, data)
    class(logcontext_type), intent(in) :: self
    integer(enum_kind), intent(in) :: level
    character(len=*), intent(in) :: data
    call log_line(name_of(self), level, 'WARNING: ', data)
  end subroutine

  subroutine context_log_error(self, level, data)
    class(logcontext_type), intent(in) :: self
    integer(enum_kind), intent(in) :: level
    character(len=*), intent(in) :: data
    call log_line(name_of(self), level, 'ERROR: ', data)
  end subroutine

  function name_of(self) result(name)
    class(logcontext_type), intent(in) :: self
    character(len=:), allocatable :: name
    name = 'Fortran'
    if (allocated(self%context)) name = self%context
  end function
end module smartredis_logcontext
