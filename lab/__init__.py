"""The lab library: everything that builds, drives and checks hadirector from outside,
for the tests, the benchmarks and the demos. It is not part of the product (pyproject
installs only ``hadirector*``) and nothing under ``hadirector/`` imports it
(tests/unit/test_layering.py holds that).

Import it from the repository root (pytest puts the root on ``sys.path``; scripts run
as ``python -m lab.MODULE`` or ``python -m bench.SCRIPT`` from there):

- ``lab.netns``: ``sh()`` and ``inside()``, the namespace primitives every builder uses;
- ``lab.lan``: the one namespace LAN builder: ``Lan``, a switched LAN of nodes (VRRP tests,
  failover bench, election demo), and the director-pair layout (``lan.up(mode)``);
- ``lab.agents``: real ``hadirector run`` and keepalived processes on such a LAN;
- ``lab.ipvs_netns``: one namespace with an addressed veth, for the IPVS kernel tests;
- ``lab.ipvs_scenarios``: IPVS config builders and health views for tests and benches;
- ``lab.scaleout_ipvs``: the scale-out data-plane lab (static ECMP router, three IPVS DR
  directors, real servers, long-lived connections) for the kernel lab, and its server and client;
- ``lab.pairlab``: the director-pair lab (client, two directors, real servers on
  ``lab.lan``'s pair layout) and its orchestrator (``python -m lab.pairlab demo``, run by netns-lab/demo);
- ``lab.realserver``, ``lab.client``: the pair lab's servers and client traffic;
- ``lab.faults``, ``lab.invariants``: the fault injector and the outside checks;
- ``lab.timeline``, ``lab.vipwatch``: the failover timeline picture and its VIP sampler;
- ``lab.election_demo``: the VRRP election demo (netns-lab/election-demo);
- ``lab.kernel``: the kernel lab, a QEMU guest whose kernel has IPVS
  (``python -m lab.kernel -- CMD``), and its pytest plugin;
- ``lab.progress``: waits and downloads that say what they wait for;
- ``lab.processes``: ``alive(pid)``, for tests that watch real process trees.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
