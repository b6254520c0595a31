"""A node of sans-IO parts for director tests: VRRP machines + a Director, and a shell
that executes the effects the way ``Agent`` does (orders at once, nested), recording
each one. ``NodeLink`` puts nodes on ``FakeLink``'s LAN under one fake clock."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hadirector.director import effects as fx
from hadirector.director.lvs import LvsRole
from hadirector.director.node import Director
from hadirector.model import Config, NodeSettings
from hadirector.vrrp.machine import MasterWish, Reannounce, RoleChanged, SendAdvert, VrrpMachine

from tests.unit.vrrp.helpers import FakeLink


def config(*instances, groups=()) -> Config:
    return Config(node=NodeSettings(router_id="t"), vrrp_instances=tuple(instances),
                  sync_groups=tuple(groups))


class Node:
    def __init__(self, config: Config, primary: str, send=None) -> None:
        self.director = Director(config)
        self.machines = {i.name: VrrpMachine(i, primary_address=ipaddress.ip_address(primary),
                                             sync_group=self.director.in_sync_group(i.name))
                         for i in config.vrrp_instances}
        for name, m in self.machines.items():
            self.director.attach(name, m.state)
        # The LVS side hears role changes as the agent's subscriber (PublishRole).
        self.lvs = LvsRole(config)
        self.send = send or (lambda machine, action: None)
        self.now = 0.0
        self.done: list = []             # every effect executed, in order
        self.holding: set[str] = set()   # instances whose VIPs are wanted

    def start(self, *names: str) -> None:
        for name in names or self.machines:
            self.machines[name].start(self.now)
            self.drain(name)

    def drain(self, name: str) -> bool:
        """The driver's ``_drain``: adverts first, then the director's inputs."""
        m = self.machines[name]
        actions = m.actions()
        for a in actions:
            if isinstance(a, SendAdvert):
                self.send(m, a)
        for a in actions:
            if isinstance(a, RoleChanged):
                self.director.role_changed(name, a, priority=m.effective_priority, now=self.now)
            elif isinstance(a, MasterWish):
                self.director.master_wish(name, a, now=self.now)
            elif isinstance(a, Reannounce):
                self.director.reannounce(name, now=self.now)
            else:
                continue
            self.execute()
        return bool(actions)

    def execute(self) -> None:
        for e in self.director.effects():
            self.done.append(e)
            if isinstance(e, fx.AddVips):
                self.holding.add(e.instance)
            elif isinstance(e, fx.RemoveVips):
                self.holding.discard(e.instance)
            elif isinstance(e, fx.ForceState):
                self.machines[e.instance].force_state(e.state, e.reason, self.now)
                self.drain(e.instance)
            elif isinstance(e, fx.SetFault):
                self.machines[e.instance].set_fault(e.fault, e.reason, self.now)
                self.drain(e.instance)
            elif isinstance(e, fx.PublishRole):
                self.done.extend(self.lvs.role_changed(e.instance, e.change.new))

    def set_fault(self, name: str, fault: bool, reason: str) -> None:
        self.director.set_fault(name, fault, reason, now=self.now)
        self.execute()


@dataclass
class NodeLink(FakeLink):
    """``FakeLink`` whose machines belong to nodes: role changes go to each node's
    director and its effects are executed as the agent would."""

    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def of(cls, *nodes: Node) -> "NodeLink":
        link = cls(machines=[m for n in nodes for m in n.machines.values()], nodes=list(nodes))
        for n in nodes:
            n.send = link._broadcast
        return link

    def start(self, *which) -> None:
        for n in self.nodes:
            n.now = self.now
            n.start()
        self.flush()

    def flush(self) -> None:
        for _ in range(10_000):
            busy = False
            for n in self.nodes:
                n.now = self.now
                for name in n.machines:
                    busy = n.drain(name) or busy
            if not busy:
                return
        raise AssertionError("adverts never quiet down: a storm")

    def holders(self) -> list[tuple[int, str]]:
        return sorted((i, name) for i, n in enumerate(self.nodes) for name in n.holding)
