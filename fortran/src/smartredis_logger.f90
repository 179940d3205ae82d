!> SmartRedis's Fortran logging (module smartredis_logger) and log contexts (smartredis_logcontext
!> is in smartredis_logcontext.f90): log_data/log_warning/log_error(level, data), written when
!> SR_LOG_LEVEL (QUIET, INFO, DEBUG, DEVELOPER; INFO when unset) is at least level and not QUIET,
!> to SR_LOG_FILE (standard output when unset), as the Python side (mpistage.smartredis.logger).
module smartredis_logger
  use, intrinsic :: iso_fortran_env, only : output_unit
  use, intrinsic :: iso_c_binding, only : c_ptr, c_char, c_int, c_null_char, c_associated
  use mpistage, only : enum_kind
  implicit none
  private

  ! C's stdio, whose "a" mode is O_APPEND: every line lands at the end of the file even when the
  ! ranks of a job log to one file at once (Fortran's position='append' only seeks at the open,
  ! so two ranks would write over each other's lines).
  interface
    type(c_ptr) function c_fopen(path, mode) bind(C, name='fopen')
      import :: c_ptr, c_char
      character(kind=c_char), intent(in) :: path(*), mode(*)
    end function
    integer(c_int) function c_fputs(text, stream) bind(C, name='fputs')
      import :: c_ptr, c_char, c_int
      character(kind=c_char), intent(in) :: text(*)
      type(c_ptr), value :: stream
    end function
    integer(c_int) function c_fclose(stream) bind(C, name='fclose')
      import :: c_ptr, c_int
      type(c_ptr), value :: stream
    end function
  end interface

  public :: enum_kind, log_data, log_warning, log_error, log_line

contains

  !> The configured level: 1 quiet, 2 info, 3 debug, 4 developer.
  integer function configured_level()
    character(len=16) :: text
    integer :: stat
    call get_environment_variable('SR_LOG_LEVEL', text, status=stat)
    configured_level = 2
    if (stat /= 0) return
    select case (trim(adjustl(text)))
    case ('QUIET', 'quiet'); configured_level = 1
    case ('DEBUG', 'debug'); configured_level = 3
    case ('DEVELOPER', 'developer'); configured_level = 4
    end select
  end function

  !> Write "<context>@<time>:<mark><data>" when level is configured to be written.
  subroutine log_line(context, level, mark, data)
    character(len=*), intent(in) :: context, mark, data
    integer(enum_kind), intent(in) :: level
    integer :: threshold, length, stat
    type(c_ptr) :: stream
    integer :: t(8)
    character(len=19) :: stamp
    character(len=:), allocatable :: path, line
    threshold = configured_level()
    if (threshold == 1 .or. level > threshold) return
    call date_and_time(values=t)
    write (stamp, '(i4.4,"-",i2.2,"-",i2.2,"T",i2.2,":",i2.2,":",i2.2)') t(1), t(2), t(3), t(5), t(6), t(7)
    line = trim(context) // '@' // stamp // ':' // mark // trim(data)
    call get_environment_variable('SR_LOG_FILE', length=length, status=stat)
    if (stat /= 0 .or. length == 0) then
      write (output_unit, '(a)') line
      return
    end if
    allocate(character(len=length) :: path)
    call get_environment_variable('SR_LOG_FILE', path)
    stream = c_fopen(path // c_null_char, 'a' // c_null_char)
    if (.not. c_associated(stream)) return
    stat = c_fputs(line // new_line('a') // c_null_char, stream)  ! one write(2) at the fclose
    stat = c_fclose(stream)
  end subroutine

  !> Log data at level (context "Fortran").
  subroutine log_data(level, data)
    integer(enum_kind), intent(in) :: level
    character(len=*), intent(in) :: data
    call log_line('Fortran', level, '', data)
  end subroutine

  !> As log_data, marked as a warning.
  subroutine log_warning(level, data)
    integer(enum_kind), intent(in) :: level
    character(len=*), intent(in) :: data
    call log_line('Fortran', level, 'WARNING: ', data)
  end subroutine

  !> As log_data, marked as an error.
  subroutine log_error(level, data)
    integer(enum_kind), intent(in) :: level
    character(len=*), intent(in) :: data
    call log_line('Fortran', level, 'ERROR: ', data)
  end subroutine
end module smartredis_logger
