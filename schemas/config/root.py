"""The whole configuration of one orchestra (a profile directory merged into one document)."""

from __future__ import annotations

from typing import Literal

from schemas.config.actors import CacheCfg, CloudProxyCfg, GatewayCfg, MonitorCfg, RotatorCfg, RouterCfg
from schemas.config.base import Cfg
from schemas.config.bus import BusCfg
from schemas.config.hosts import CardCfg, HostCfg, StorageCfg
from schemas.config.models import CloudModel, EmbeddingModel, LocalModel, ModelCfg
from schemas.config.ops import AlertsCfg, BudgetsCfg, PhaseCfg, RouteCfg
from schemas.config.providers import ProviderCfg


class OrchestraConfig(Cfg, frozen=True, kw_only=True):
    profile: str
    description: str = ""
    data_dir: str = ".data"  # relative to the working directory
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    bus: BusCfg = BusCfg()
    gateway: GatewayCfg = GatewayCfg()
    router: RouterCfg = RouterCfg()
    cache: CacheCfg = CacheCfg()
    rotator: RotatorCfg
    monitor: MonitorCfg = MonitorCfg()
    cloud_proxy: CloudProxyCfg = CloudProxyCfg()
    models: dict[str, ModelCfg]
    embedding_models: dict[str, EmbeddingModel] = {}  # cloud embeddings (POST /v1/embeddings)
    cards: dict[str, CardCfg] = {}
    hosts: dict[str, HostCfg] = {}
    storage: dict[str, StorageCfg] = {}
    providers: dict[str, ProviderCfg] = {}
    phases: dict[str, PhaseCfg]
    routes: dict[str, RouteCfg] = {}
    alerts: AlertsCfg = AlertsCfg()
    budgets: BudgetsCfg = BudgetsCfg()

    def local_models(self) -> dict[str, LocalModel]:
        return {n: m for n, m in self.models.items() if isinstance(m, LocalModel)}

    def cloud_models(self) -> dict[str, CloudModel]:
        return {n: m for n, m in self.models.items() if isinstance(m, CloudModel)}
