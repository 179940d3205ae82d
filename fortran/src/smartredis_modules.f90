!> SmartRedis's Fortran module names over mpistage's client (docs/smartredis.md): a SmartRedis
!> program's `use smartredis_client`, `use smartredis_dataset`, `use smartredis_errors` work
!> unchanged. The status constants come from enum_fortran.inc, which SmartRedis programs include
!> themselves (installed beside the .mod files), so these modules export no SR* names.
module smartredis_dataset
  use mpistage, only : dataset_type, enum_kind
  implicit none
  private
  public :: dataset_type, enum_kind
end module smartredis_dataset

module smartredis_client
  use mpistage, only : client_type, enum_kind
  implicit none
  private
  public :: client_type, enum_kind
end module smartredis_client

module smartredis_errors
  use, intrinsic :: iso_fortran_env, only : error_unit
  use mpistage, only : get_last_error
  implicit none
  private
  public :: get_last_error, get_last_error_location, print_last_error

contains

  !> Where the last error happened: mpistage reports it in the text of get_last_error().
  function get_last_error_location() result(text)
    character(len=:), allocatable :: text
    text = 'mpistage Fortran client'
  end function

  !> Write the last error's text to unit (default: standard error).
  subroutine print_last_error(unit)
    integer, intent(in), optional :: unit
    if (present(unit)) then
      write (unit, '(a)') get_last_error()
    else
      write (error_unit, '(a)') get_last_error()
    end if
  end subroutine
end module smartredis_errors
