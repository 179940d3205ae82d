!> Key routing test vectors of docs/protocol.md, section 4 (no MPI, no servers).
program routing
  use mpistage, only : mpistage_crc16, mpistage_hash_slot, mpistage_shard_of
  implicit none
  integer :: failures = 0
  call check('123456789', int(z'31C3'), 12739, 1, 2)
  call check('foo', int(z'AF96'), 12182, 1, 2)
  call check('bar', int(z'93C5'), 5061, 0, 0)
  call check('hello', int(z'C362'), 866, 0, 0)
  call check('{user1000}.following', -1, 3443, 0, 0)
  call check('{user1000}.followers', -1, 3443, 0, 0)
  call check('foo{}{bar}', int(z'E0AB'), 8363, 1, 1)
  call check('foo{{bar}}zap', -1, 4015, 0, 0)
  if (failures > 0) error stop 1
  print '(a)', 'routing: 8 test vectors ok'
contains
  subroutine check(key, crc, slot, s2, s3)
    character(len=*), intent(in) :: key
    integer, intent(in) :: crc, slot, s2, s3
    logical :: ok
    ok = mpistage_hash_slot(key) == slot .and. mpistage_shard_of(key, 2) == s2 .and. mpistage_shard_of(key, 3) == s3
    if (crc >= 0) ok = ok .and. mpistage_crc16(key) == crc
    if (.not. ok) then
      failures = failures + 1
      print '(a,3i8)', 'routing FAIL: ' // key, mpistage_hash_slot(key), mpistage_shard_of(key, 2), &
           mpistage_shard_of(key, 3)
    end if
  end subroutine
end program routing
