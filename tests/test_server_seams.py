"""Server seams under real mpiexec: no head-of-line stall behind a withheld payload, torch
imported only with the first model, no window memory in MPMD, the connect-mode window cap, and
retired links' threads that do not pile up."""

from harness import run_mpmd, started_servers

MIB = 1 << 20


def test_withheld_payload_does_not_stall_other_clients():
    out = run_mpmd("seams_hol.py", servers=1, clients=2, timeout=120).stdout
    assert out.count("seams_hol OK") == 2, out
    assert "the withheld put completed after the stall" in out, out


def test_torch_is_imported_with_the_first_model_and_mpmd_has_no_window():
    out = run_mpmd("seams_lazy_torch.py", servers=1, clients=3, server_args=["--threads", "1"], timeout=150).stdout
    assert out.count("seams_lazy_torch OK") == 3, out
    assert "mpmd link of 3 ranks has 0 bytes of window" in out, out


def test_connect_window_cap_shrinks_slots_then_goes_point_to_point():
    with started_servers(shards=1, server_args=["--window-cap", "1M"]) as servers:
        two = servers.run_client("seams_window.py", clients=2, app_args=[str(MIB // 2)], timeout=150).stdout
        assert two.count("seams_window OK") == 2, two
        four = servers.run_client("seams_window.py", clients=4, app_args=[str(MIB // 4)], timeout=150).stdout
        assert four.count("seams_window OK") == 4, four
        five = servers.run_client("seams_window.py", clients=5, app_args=["0"], timeout=150).stdout
        assert five.count("seams_window OK") == 5, five
        # three jobs have come and gone: their release threads do not pile up
        threads = int(five.split("release threads ")[1].split()[0])
        assert threads <= 1, five
