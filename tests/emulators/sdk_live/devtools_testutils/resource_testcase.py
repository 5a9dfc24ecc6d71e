"""Resource group preparers: a resource group created through Azure Resource Manager for the test (live only).

``ResourceGroupPreparer`` creates the group with ``azure-mgmt-resource``'s ``ResourceManagementClient`` (the
subscription is ``AZURE_SUBSCRIPTION_ID``, the credential the test case's) and deletes it after the test;
``RandomNameResourceGroupPreparer`` gives it a random name, ``CachedResourceGroupPreparer`` shares one group
between the tests that ask for the same one.
"""

from __future__ import annotations

import functools
from typing import Any

from devtools_testutils.preparers import AzureMgmtPreparer, get_region_override

__all__ = [
    "RESOURCE_GROUP_PARAM",
    "CachedResourceGroupPreparer",
    "RandomNameResourceGroupPreparer",
    "ResourceGroupPreparer",
]

RESOURCE_GROUP_PARAM = "resource_group"


class ResourceGroupPreparer(AzureMgmtPreparer):
    def __init__(
        self,
        name_prefix: str = "",
        use_cache: bool = False,
        random_name_length: int = 75,
        parameter_name: str = RESOURCE_GROUP_PARAM,
        parameter_name_for_location: str = "location",
        location: str | None = None,
        disable_recording: bool = True,
        playback_fake_resource: Any = None,
        client_kwargs: dict[str, Any] | None = None,
        random_name_enabled: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            name_prefix, random_name_length, disable_recording, playback_fake_resource, client_kwargs,
            random_name_enabled,
        )  # fmt: skip
        self.location = location or get_region_override("westus")
        self.parameter_name = parameter_name
        self.parameter_name_for_location = parameter_name_for_location
        self.set_cache(use_cache, parameter_name, name_prefix)

    def _client(self) -> Any:
        from azure.mgmt.resource import ResourceManagementClient

        if self.client is None:
            self.client = self.create_mgmt_client(ResourceManagementClient, **self.client_kwargs)
        return self.client

    def create_resource(self, name: str, **kwargs: Any) -> dict[str, Any]:
        self.resource = self._client().resource_groups.create_or_update(name, {"location": self.location})
        return {self.parameter_name: self.resource, self.parameter_name_for_location: self.location}

    def remove_resource(self, name: str, **kwargs: Any) -> None:
        self._client().resource_groups.begin_delete(name, polling=False)


RandomNameResourceGroupPreparer = functools.partial(ResourceGroupPreparer, random_name_enabled=True)
CachedResourceGroupPreparer = functools.partial(ResourceGroupPreparer, use_cache=True, random_name_enabled=True)
