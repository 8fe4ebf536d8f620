"""What /metrics tells about clients by default: no IP address anywhere, the username only on
emqx_client_info (README "Security"), and each only where the user asks for more.
"""

from __future__ import annotations

from emqx_simulator import SimSettings
from tests.harness import rig


async def test_ip_addresses_and_usernames_stay_out_of_labels_by_default() -> None:
    async with rig(SimSettings(clients=200)) as r:
        await r.poll()
        samples = await r.scrape()
        assert any(name == "emqx_client_online" for name, _, _ in samples)
        labelled = {name for name, labels, _ in samples
                    for key, _ in labels if key in ("ip_address", "username")}
        assert labelled == {"emqx_client_info"}
        info_keys = {key for name, labels, _ in samples if name == "emqx_client_info"
                     for key, _ in labels}
        assert "ip_address" not in info_keys and "username" in info_keys


async def test_they_become_labels_only_when_asked_for() -> None:
    async with rig(SimSettings(clients=50),
                   per_client={"labels": ["ip_address"],
                               "info_labels": ["node", "listener"]}) as r:
        await r.poll()
        samples = await r.scrape()
        online = [dict(labels) for name, labels, _ in samples if name == "emqx_client_online"]
        assert online and all("ip_address" in labels for labels in online)
        assert not any(key == "username" for _, labels, _ in samples for key, _ in labels)
