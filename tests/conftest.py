"""The two test tiers, in one place.

``bash scripts/test.sh`` runs the fast tier (``-m "not slow"``): every unit test without MPI and one
lean MPI scenario per capability. ``bash scripts/test.sh --all`` runs every test and ``--slow-only``
the rest (``-m slow``), which CI runs after the fast tier. A bare ``pytest`` runs every test.

:data:`SLOW` names the slow tier: a file (every test in it, including tests added to it later, so a
file that is all MPI scenarios stays slow as it grows) or a test (every parametrization of it, or one
with its ``[id]``). Everything else is fast. A new MPI scenario that is not the one lean check of a
capability belongs here. Times in the comments: one run of the whole suite at load average 4-14
(2026-12-02); on a quiet machine they are about half.
"""

from __future__ import annotations

import warnings

import pytest

SLOW: tuple[str, ...] = (
    # Whole files: every test in them is an MPI job of 10 s or more.
    "tests/test_adios2_bridge.py",  # 33 s
    "tests/test_adios2_decomp.py",  # 8 s, 4 ranks
    "tests/test_dead_clients.py",  # 72 s
    "tests/test_engine.py",  # 154 s
    "tests/test_smartredis_fortran.py",  # 17 s (Fortran and SmartRedis have their fast checks)
    "tests/test_soak.py",  # 71 s
    # ADIOS2 SST: one round trip (mpistage writer, stock reader) stays fast.
    "tests/test_adios2_sst.py::test_stock_writer_to_mpistage_reader",
    "tests/test_adios2_sst.py::test_mpistage_writer_to_mpistage_reader_with_step_timeouts",
    "tests/test_adios2_sst.py::test_writer_that_dies_ends_the_readers_stream",
    "tests/test_adios2_sst.py::test_reader_that_dies_does_not_stop_the_writer",
    "tests/test_adios2_sst.py::test_full_queue_drops_steps_and_the_reader_counts_them",
    # Client defects over MPI: the MPMD shutdown check stays fast.
    "tests/test_client_mpi.py::test_reply_payload_drained_and_seq_never_reused_while_in_flight",
    "tests/test_client_mpi.py::test_wrong_shard_count_fails_clearly_and_a_later_job_connects",
    "tests/test_client_mpi.py::test_set_model_and_set_script_are_all_or_nothing_over_shards",
    "tests/test_engine_deadline.py::test_endless_script_times_out_and_the_engine_goes_on",  # 52 s
    # Fortran: the protocol vectors and the MPMD round trip stay fast.
    "tests/test_fortran.py::test_connect_roundtrip",
    "tests/test_fortran.py::test_connect_without_mpiexec",
    "tests/test_fortran.py::test_engine_from_fortran",
    "tests/test_fortran.py::test_mpistage_config_and_example",
    "tests/test_hardening_access.py::test_secret_refusals_kills_mid_connect_and_later_jobs_work",  # 60 s
    # Launcher: the unit tests and one small experiment (spawned servers and members, SIGINT) stay fast.
    "tests/test_launcher.py::test_spawn_sweep",  # 63 s
    "tests/test_launcher.py::test_mpiexec_fallback_sweep",  # 131 s
    "tests/test_launcher.py::test_interrupt_leaves_nothing[mpiexec-15]",
    "tests/test_launcher.py::test_spawned_database_stops_cleanly",
    # Limits: the unit tests stay fast; the MPI scenarios are slow.
    "tests/test_limits.py::test_per_key_overhead_is_counted_within_ten_percent_of_real_growth",
    "tests/test_limits.py::test_cap_is_checked_before_a_refused_payload_is_received",
    "tests/test_limits.py::test_parts_travel_in_several_messages_and_lists_are_limited",
    "tests/test_limits.py::test_fortran_header_limit_and_parts_in_several_messages",
    # Ocean: the numpy checks, mass conservation, the MEKE closure and the bad namelist stay fast.
    "tests/test_ocean_coupled.py::test_coupled_run_end_to_end",  # 96 s
    "tests/test_ocean_model.py::test_decomposition_gives_same_fields",
    "tests/test_ocean_model.py::test_fine_run_stays_finite_and_bounded",
    "tests/test_ocean_model.py::test_restart_continues_exactly",
    "tests/test_ocean_model.py::test_ml_closure_against_servers",
    "tests/test_ocean_trainer.py::test_trainer_waits_for_streamed_snapshots_and_publishes",
    "tests/test_onnx_runtime.py::test_onnx_models_on_an_onnx_only_server",  # 49 s
    "tests/test_onnx_runtime.py::test_onnx_model_from_fortran",
    "tests/test_scaling.py::test_smallest_configuration_end_to_end",
    # Server: the MPMD round trips, malformed messages, snapshot/restore and the errors stay fast.
    "tests/test_server.py::test_soak_four_clients_two_shards",
    "tests/test_server.py::test_connect_mode_jobs_come_and_go",
    "tests/test_server.py::test_connect_mode_concurrent_jobs",
    "tests/test_server.py::test_sigterm_shutdown_writes_snapshot",
    "tests/test_server.py::test_client_request_shuts_servers_down",
    # Seams: the head-of-line test and lazy torch (which runs a model) stay fast.
    "tests/test_server_seams.py::test_connect_window_cap_shrinks_slots_then_goes_point_to_point",
    # SmartRedis drop-in: the connect-mode program stays fast (it is also the connect-mode check).
    "tests/test_smartredis_servers.py::test_smartredis_program_in_mpmd_mode",
    "tests/test_torch_export.py::test_torch_export_programs_on_a_server",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: the slow tier (tests/conftest.py SLOW); CI runs it after the fast tier")


_SLOW_SET = frozenset(SLOW)


def _slow_entry(nodeid: str) -> str | None:
    """The SLOW entry that names ``nodeid`` (its file, its test, or the test with its parameters)."""
    file, _, name = nodeid.partition("::")
    for candidate in (nodeid, f"{file}::{name.partition('[')[0]}", file):
        if candidate in _SLOW_SET:
            return candidate
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the SLOW tests ``slow`` (before ``-m`` deselects); report SLOW entries that name nothing."""
    used: set[str] = set()
    for item in items:
        entry = _slow_entry(item.nodeid)
        if entry is not None:
            item.add_marker(pytest.mark.slow)
            used.add(entry)
    if any("::" in arg for arg in config.args):
        return  # single tests were asked for: the rest of their files was not collected
    files = {item.nodeid.partition("::")[0] for item in items}
    stale = [e for e in SLOW if e not in used
             and (e.partition("::")[0] in files or not (config.rootpath / e.partition("::")[0]).exists())]
    if not stale:
        return
    message = "tests/conftest.py SLOW names tests that were not collected: " + ", ".join(stale)
    if config.getoption("markexpr"):
        raise pytest.UsageError(message + " (a tier was selected with -m, so the list must be right)")
    warnings.warn(pytest.PytestWarning(message), stacklevel=1)
