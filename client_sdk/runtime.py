"""The one place that assembles the decode side: a Speculator with its datastore connection,
planner, feedback and drafter. The SGLang worker, the CLI, the demo and every benchmark
build theirs here, so benchmarks measure the product itself."""

from __future__ import annotations

import dataclasses
import logging

from client_sdk.drafting.budget import Model, forward_time, measure_local
from client_sdk.drafting.drafters import Drafter
from client_sdk.transport.feedback import FeedbackSink
from client_sdk.drafting.costs import StepCosts
from client_sdk.drafting.planner import PlannerConfig, StepPlanner
from client_sdk.transport.remote import DatastoreClient, several_servers
from client_sdk.transport.source import RemoteSource
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import Speculator
from client_sdk.drafting.tree import Calibration, warm_up, warm_up_parallel
from client_sdk.types import DraftConfig, GenerationSink, TrieSource
from sssd_wire.errors import one_line
from sssd_wire.types import LookupParams, namespace_checked, vocabulary

log = logging.getLogger("sssd.sdk")

# Decoding on a CPU (the reference decoder: sssd generate, the demo, bench decode): a step takes
# tens of milliseconds and nothing runs beside it, so each step's own lookup, started right
# after its commits (Speculator.committed), is worth waiting for (~1-3 ms): it finds the short
# matches that end in the bonus token, which outcome prefetch misses (BENCHMARKS: serve-sim).
# A step that waits for its own lookup already knows its bonus token: the 1-token suffix
# does not pay there (replay: -0.4 to -1.3 % tau at budgets 4-16 on MT-Bench).
CPU_DECODING = SpeculatorConfig(prefetch_outcomes=False, lookup_deadline_s=0.01,
                                draft=dataclasses.replace(DraftConfig(), remote_suffixes=(2,)))


def lookup_options(c: DraftConfig, depth: int, outcomes: bool = False) -> LookupParams:
    """What the datastore is asked; ``outcomes``: one level deeper, for outcome prefetch (the
    bonus token of the step is the trie's first level)."""
    depth = min(depth, c.remote_depth)
    depth = depth + 1 if outcomes else depth
    return LookupParams(max_match=c.remote_match, min_occurrences=c.remote_min_occurrences,
                        sample_budget=c.prefetch_samples if outcomes else c.remote_samples, depth=depth,
                        max_nodes=c.remote_nodes)


def roofline_costs(model_config: dict, context: int = 1024, batches=(1,), widths=PlannerConfig().widths) -> StepCosts:
    """A start-up cost table from the roofline of this machine's CPU (when nothing was measured)."""
    hw, shape = measure_local(0.2), Model.from_config(model_config)
    return StepCosts({(b, n): forward_time(hw, shape, b, n, context) for b in batches for n in widths})


def check_namespace(client: DatastoreClient, namespace: str, vocab_size: int | None,
                    tokenizer_fingerprint: str | None = None, served=None) -> bool:
    """Whether the datastore serves ``namespace`` for this vocabulary: a missing namespace or an
    unreadable one is one warning (drafting goes on from each request's own text); a namespace
    of another vocabulary, or created for another tokenizer (``sssd namespace create --tokenizer``),
    is a ValueError (its token ids would not be this model's). served: ``client.served()`` when
    the caller has it already."""
    import grpc

    try:
        spaces = {n.name: n for n in (served or client.served()).namespaces}
    except grpc.RpcError as exc:
        hint = (" (the datastore has tokens: give this worker one, SSSD_TOKEN or --token)"
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED else "")
        log.warning("datastore %s: cannot list namespaces (%s)%s; drafting from requests' own text until it can",
                    client.address, one_line(exc), hint)
        return False
    if namespace not in spaces:  # (a server with tokens lists only the namespaces this one may use)
        log.warning("datastore %s has no namespace %r%s (it has %s); create and fill it with `sssd namespace create` "
                    "and `sssd ingest`", client.address, namespace,
                    " that this token may use" if client.metadata else "", sorted(spaces) or "none")
        return False
    if vocab_size is not None and spaces[namespace].vocab_size != vocab_size:
        raise ValueError(f"datastore namespace {namespace!r} holds a {spaces[namespace].vocab_size}-token vocabulary, "
                         f"the model has {vocab_size}: name this tokenizer's namespace instead "
                         f"(`sssd generate --namespace`; SSSD_NAMESPACE in the SGLang worker)")
    theirs = spaces[namespace].tokenizer_fingerprint
    if tokenizer_fingerprint and theirs and theirs != tokenizer_fingerprint:
        raise ValueError(f"datastore namespace {namespace!r} holds text of tokenizer {theirs}, the model's is "
                         f"{tokenizer_fingerprint}: its token ids would not be this model's")
    return True


def within_served_cap(client: DatastoreClient, config: SpeculatorConfig, served=None) -> SpeculatorConfig:
    """``config`` with max_lookup_contexts lowered to the server's --max-lookup-contexts where that
    is smaller (the server refuses a larger Lookup: every prefetch of a large batch was refused),
    and the client's parts with it; said in the log. served: as for ``check_namespace``."""
    import grpc

    try:
        cap = (served or client.served()).max_lookup_contexts
    except grpc.RpcError:  # (check_namespace has said why)
        return config
    if not cap or cap >= config.max_lookup_contexts:
        return config
    log.info("datastore %s takes at most %d contexts in one lookup (its --max-lookup-contexts): prefetches ask for "
             "at most that many and larger lookups go in parts (SSSD_MAX_LOOKUP_CONTEXTS was %d)", client.address, cap,
             config.max_lookup_contexts)
    client.max_lookup_contexts = cap
    return dataclasses.replace(config, max_lookup_contexts=max(cap, 4))


def _served(client: DatastoreClient):
    import grpc

    try:
        return client.served()
    except grpc.RpcError:
        return None


def build_speculator(model_config: dict | None = None, *, address: str | None = None, namespace: str = "default",
                     token: str | None = None, fixed_budget: int | None = None, costs: StepCosts | None = None,
                     feedback: bool = False, remote: TrieSource | None = None, sink: GenerationSink | None = None,
                     drafter: Drafter | None = None, calibration: Calibration | None = None,
                     config: SpeculatorConfig = SpeculatorConfig(), vocab_size: int | None = None,
                     feedback_address: str | None = None, tokenizer_fingerprint: str | None = None,
                     tls_ca: str | None = None) -> Speculator:
    """A Speculator with an optional datastore and, unless fixed_budget is set, a step planner.

    costs: the planner's start-up StepCosts measured on this device (decoder.measured_costs);
    without it, the roofline of the measured local CPU for ``model_config``. remote / sink:
    ready-made tries source and feedback sink (else built from ``address`` when given).
    drafter / calibration: see Speculator (default: SSSD's drafter, the shipped prior).
    vocab_size, tokenizer_fingerprint: the model's; with ``address``, the namespace is checked
    against them at once (sssd.tokenizers.fingerprint).
    feedback_address: the writer, when ``address`` names read replicas (they refuse writes).
    tls_ca: a PEM CA bundle: the datastore (and feedback_address) over TLS.
    """
    if fixed_budget is None and costs is None and model_config is None:  # (said after a connect and the kernels' compile)
        raise ValueError("build_speculator needs a draft size: fixed_budget=N, or a planner's step costs "
                         "(costs=decoder.measured_costs(...), or model_config=the model's config for the roofline)")
    vocab_size = vocabulary(vocab_size)  # (before a connect)
    # (a DraftConfig given as config, or a dict of costs, failed as AttributeError: at once, or at the first step)
    for value, kind, name, hint in ((config, SpeculatorConfig, "config", "SpeculatorConfig(draft=DraftConfig(...))"),
                                    (costs, StepCosts, "costs", "StepCosts({(batch, width): seconds})")):
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"{name} must be a {kind.__name__}, such as {hint}, not {type(value).__name__}")
    if feedback_address and not (feedback and sink is None and address and remote is None):  # (unsaid before)
        log.warning("feedback_address (SSSD_FEEDBACK_ADDRESS) %s is not used: %s", feedback_address,
                    "feedback is off" if not feedback else "a ready-made sink is given" if sink is not None
                    else "a ready-made remote source is given" if remote is not None else "no datastore address is given")
    made: list = []  # the sources this call opened: closed again when it fails (their threads, channels)
    try:
        if address and remote is None:
            namespace_checked(namespace)  # (it was a warning, then every lookup refused)
            client = DatastoreClient(address, token, tls_ca, timeout_s=5.0, lookup_stream=config.lookup_stream,
                                     max_lookup_contexts=config.max_lookup_contexts)
            options = lookup_options(config.draft, config.draft.max_depth, config.prefetch_outcomes)
            remote = RemoteSource(client, namespace, options, owns_client=True)  # closed with the speculator
            made.append(remote)
            if remote.connect():  # now, not in the first decode step's lookup
                served = _served(client)  # (one ListNamespaces for both; None: each asks, and says why it failed)
                check_namespace(client, namespace, vocab_size, tokenizer_fingerprint, served)
                config = within_served_cap(client, config, served)
            if feedback and sink is None:
                if feedback_address:
                    sink = FeedbackSink(DatastoreClient(feedback_address, token, tls_ca, timeout_s=5.0), namespace,
                                        config.worker_id, owns_client=True)
                else:
                    if several_servers(address):  # (a replica refuses each batch: found at the first one)
                        log.warning("feedback goes to %s, the servers lookups spread over: read replicas refuse "
                                    "writes, so name the writer in feedback_address (SSSD_FEEDBACK_ADDRESS)", address)
                    sink = FeedbackSink(client, namespace, config.worker_id)
                made.insert(0, sink)  # (closed before the client it may share)
        warm_up()  # the kernels compile here, not inside the first decode step
        if config.draft.draft_threads > 1:
            warm_up_parallel()
        planner = None
        if fixed_budget is None:
            if costs is None:
                costs = roofline_costs(model_config, widths=config.planner.widths)
            planner = StepPlanner(costs, config.planner)
        else:
            config = dataclasses.replace(config, fixed_budget=fixed_budget)
        return Speculator(config, remote=remote, planner=planner, feedback=sink, drafter=drafter,
                          calibration=calibration, vocab_size=vocab_size)
    except BaseException:  # (a namespace that does not fit left the client's loop thread and channels open)
        for source in made:
            source.close()
        raise
