"""Assembling a Speculator for a decode loop: datastore connection, planner, feedback."""

from __future__ import annotations

import dataclasses
import logging

from client_sdk.budget import BudgetPlanner, Model, measure_local
from client_sdk.feedback import FeedbackSink
from client_sdk.remote import DatastoreClient
from client_sdk.source import RemoteSource
from client_sdk.speculator import Speculator, SpeculatorConfig
from client_sdk.types import DraftConfig, LookupOptions

log = logging.getLogger("sssd.sdk")


def lookup_options(c: DraftConfig, depth: int) -> LookupOptions:
    return LookupOptions(max_match=c.remote_match, min_occurrences=c.remote_min_occurrences,
                         sample_budget=c.remote_samples, depth=depth, max_nodes=c.remote_nodes)


def make_speculator(model_config: dict, *, address: str | None = None, namespace: str = "default",
                    token: str | None = None, fixed_budget: int | None = None, cost=None, max_budget: int = 16,
                    feedback: bool = False, config: SpeculatorConfig = SpeculatorConfig()) -> Speculator:
    """A Speculator with an optional datastore and, unless fixed_budget is set, a budget planner.

    cost: a MeasuredCost for this device (else the roofline of the measured local CPU).
    """
    remote = sink = None
    if address:
        client = DatastoreClient(address, token, timeout_s=5.0)
        remote = RemoteSource(client, namespace, lookup_options(config.draft, config.draft.max_depth))
        sink = FeedbackSink(client, namespace, config.worker_id) if feedback else None
    planner = None
    if fixed_budget is None:
        planner = BudgetPlanner(measure_local(0.2), Model.from_config(model_config), max_budget=max_budget, cost=cost)
    else:
        config = dataclasses.replace(config, fixed_budget=fixed_budget)
    return Speculator(config, remote=remote, planner=planner, feedback=sink)
