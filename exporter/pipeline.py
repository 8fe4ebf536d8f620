"""Pure stages after the walk: selection, aggregation, rendering of one cluster's poll."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from exporter.aggregate import AggregateSettings, Classifier, aggregate_gauges, seed_keys
from exporter.config import PerClientSettings
from exporter.records import ClientRecord
from exporter.render import ClientRenderer, ClientRenderSettings, Rendered, identity_labels
from exporter.timeparse import TimeParser

#: Record fields that each per-client part reads (for v5 `fields=`).
PART_FIELDS: dict[str, tuple[str, ...]] = {
    "online": ("connected", "connected_at", "disconnected_at"),
    "bytes": ("received_bytes", "sent_bytes"),
    "messages": ("received_messages", "sent_messages"),
    "messages_qos": ("received_qos0", "received_qos1", "received_qos2", "sent_qos0",
                     "sent_qos1", "sent_qos2"),
    "dropped": ("received_dropped", "sent_dropped"),
    "dropped_reasons": ("received_dropped_await_pubrel_timeout", "sent_dropped_expired",
                        "sent_dropped_queue_full", "sent_dropped_too_large"),
    "mqueue": ("mqueue_len", "mqueue_max", "mqueue_dropped"),
    "inflight": ("inflight", "inflight_max"),
    "subscriptions": ("subscriptions", "subscriptions_max"),
    "packets": ("received_packets", "sent_packets"),
    "awaiting_rel": ("awaiting_rel", "awaiting_rel_max"),
    "session": ("keepalive", "expiry_interval", "created_at"),
    "process": ("mailbox_len", "heap_size", "reductions"),
}
#: Read by aggregation and merging whatever is configured.
BASE_FIELDS = ("clientid", "node", "connected", "connected_at", "username", "mqueue_len",
               "mqueue_max", "inflight", "inflight_max", "subscriptions")


@dataclass(slots=True)
class PipelineResult:
    rendered: Rendered
    per_client_series: int
    aggregate_series: int
    series_dropped: int


class Pipeline:
    """Selection, aggregation and rendering for one cluster, configured once."""

    def __init__(self, per_client: PerClientSettings, aggregate: AggregateSettings,
                 classifier: Classifier, parse_time: TimeParser,
                 const_labels: tuple[tuple[str, str], ...] = ()) -> None:
        self.render_settings = ClientRenderSettings(
            parts=per_client.parts, identity_labels=per_client.labels,
            info_labels=per_client.info_labels, const_labels=const_labels)
        self.aggregate_settings = AggregateSettings(
            labels=aggregate.labels, saturation=aggregate.saturation, const_labels=const_labels)
        self.classifier = classifier
        self.renderer = ClientRenderer(self.render_settings, parse_time)

    def needed_fields(self) -> frozenset[str]:
        """Every record field some configured stage reads."""
        fields = set(BASE_FIELDS)
        for part in self.render_settings.parts:
            fields.update(PART_FIELDS.get(part, ()))
        if "info" in self.render_settings.parts:
            fields.update(self.render_settings.info_labels)
        fields.update(self.render_settings.identity_labels)
        fields.update(label for label in self.aggregate_settings.labels if label != "class")
        return frozenset(fields)

    def run(self, records: Sequence[ClientRecord], nodes_ok: Sequence[str]) -> PipelineResult:
        """Render one poll's clients (all of them, until selection arrives) and aggregates."""
        rendered = self.renderer.render(records, identity_labels(records, self.render_settings))
        per_client = sum(text.count(b"\n") for text in rendered.values())
        aggregates = aggregate_gauges(
            records, self.aggregate_settings, self.classifier,
            seed_keys(self.aggregate_settings, self.classifier, nodes_ok))
        aggregate_series = sum(text.count(b"\n") for text in aggregates.values())
        rendered.update(aggregates)
        return PipelineResult(rendered, per_client, aggregate_series, 0)
