"""Scale-out (issue 14): what belongs to N active directors behind ECMP and to no layer.

``bird``  BIRD 2 beside the agent: its config rendered from ``scale_out:``, its
          ``birdc`` replies parsed (pure; the layering test holds it to the core rules)
``cli``   ``hadirector bird-config`` and ``hadirector withdraw`` (the unit's
          ``ExecStopPost=``)

The other pieces stay in the layer whose rules they follow, so one import contract
keeps holding them (tests/unit/test_layering.py):

``director/gate.py``     the announce gate, sans-IO like the rest of the director core
``agent/scaleout.py``    its asyncio shell, an agent component beside the LVS side
``kernel/gate_routes.py`` the gate routes over rtnetlink (pyroute2 lives in ``kernel/``)
``config/scaleout.py``   the ``scale_out:`` record and its checks

Nothing here is imported by this ``__init__``: ``hadirector withdraw`` runs from
``ExecStopPost=`` and should pay only for what it uses.
"""
