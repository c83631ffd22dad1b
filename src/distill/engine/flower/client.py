"""The ``ClientApp``: a node's side of a federation.

Message types (Flower Message API):

- ``query.info``: the node's ``partition-id`` (``--node-config "partition-id=K"`` in a
  deployment; set by the simulation runtime), which the server maps to one client slot;
- ``train``: ``arrays`` (its prototype's averaged weights) and ``config`` (the recipe as JSON, the
  prototype, client and round); the node trains on its shard and keeps the local model in its
  ``context.state`` for the query that follows;
- ``query.logits``: the kept local model's raw logits on the public set.

A recipe that arrives in a message is validated like a file, and may name only registered
models: a node never imports code the server names.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from distill.engine.flower.records import record_state, state_record, tensor_record
from distill.federated.client import check_network_recipe, public_logits, run_local_training
from distill.federated.setting import build_prototype_model, setting_for
from distill.federated.spec import FedRecipe

LOCAL_MODEL = "local-model"
LOCAL_META = "local-meta"


def _config(message: Message) -> ConfigRecord:
    return message.content.config_records["config"]


def _number(record: ConfigRecord, key: str) -> int:
    value = record[key]
    if not isinstance(value, int):
        raise TypeError(f"message field config.{key}: expected an integer, got {type(value).__name__}")
    return value


def _recipe(message: Message) -> FedRecipe:
    recipe = FedRecipe.model_validate_json(str(_config(message)["recipe"]))
    check_network_recipe(recipe)
    return recipe


def make_client_app() -> ClientApp:
    """A ``ClientApp`` with the three handlers above."""
    app = ClientApp()

    @app.query("info")
    def info(message: Message, context: Context) -> Message:
        partition = int(context.node_config.get("partition-id", -1))
        return Message(RecordDict({"info": ConfigRecord({"partition-id": partition})}), reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        config = _config(message)
        recipe = _recipe(message)
        prototype, client, round_index = (_number(config, key) for key in ("prototype", "client", "round"))
        state = record_state(message.content.array_records["arrays"])
        reply, _ = run_local_training(recipe, prototype, client, round_index, state)
        context.state[LOCAL_MODEL] = state_record(reply.state)
        context.state[LOCAL_META] = ConfigRecord(
            {"prototype": prototype, "client": client, "round": round_index}
        )
        metrics = MetricRecord({"samples": reply.samples, "loss": reply.loss})
        return Message(
            RecordDict({"arrays": state_record(reply.state), "metrics": metrics}), reply_to=message
        )

    @app.query("logits")
    def logits(message: Message, context: Context) -> Message:
        config = _config(message)
        recipe = _recipe(message)
        meta = context.state.config_records.get(LOCAL_META)
        wanted = tuple(_number(config, key) for key in ("prototype", "client", "round"))
        if meta is None or tuple(_number(meta, key) for key in ("prototype", "client", "round")) != wanted:
            raise RuntimeError(f"no local model of (prototype, client, round) {wanted} on this node")
        setting = setting_for(recipe)
        model = build_prototype_model(recipe, wanted[0], setting, recipe.seed)
        model.load_state_dict(record_state(context.state.array_records[LOCAL_MODEL]))
        return Message(
            RecordDict({"logits": tensor_record("logits", public_logits(recipe, model))}), reply_to=message
        )

    return app
