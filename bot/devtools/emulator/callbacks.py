"""Discord's interaction rules on the REST side: callbacks, follow-ups and webhook edits.

The 3-second acknowledgement window, the one-acknowledgement rule, the callback types each
interaction type accepts, and the 15-minute life of an interaction token are all enforced here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from . import errors
from .errors import FieldError
from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    InteractionState,
)
from .models import FLAG_EPHEMERAL, FLAG_LOADING, StoredMessage
from .recorder import RecordedFile
from .state import INTERACTION_FLAGS, EmulatorState
from .validation import validate_autocomplete, validate_modal

JSON = dict[str, Any]

# Interaction callback types
MESSAGE = 4
DEFERRED_MESSAGE = 5
DEFERRED_UPDATE = 6
UPDATE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9

ALLOWED_CALLBACKS: dict[int, frozenset[int]] = {
    APPLICATION_COMMAND: frozenset({MESSAGE, DEFERRED_MESSAGE, MODAL}),
    MESSAGE_COMPONENT: frozenset({MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE, MODAL}),
    AUTOCOMPLETE: frozenset({AUTOCOMPLETE_RESULT}),
    MODAL_SUBMIT: frozenset({MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE}),
}


class InteractionService:
    """Holds dispatched interactions and answers the REST calls that act on them."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.by_id: dict[int, InteractionState] = {}
        self.by_token: dict[str, InteractionState] = {}
        self._timers: list[asyncio.TimerHandle] = []

    def register(self, interaction: InteractionState) -> None:
        self.by_id[interaction.id] = interaction
        self.by_token[interaction.token] = interaction
        loop = asyncio.get_running_loop()
        # A real-time backstop; advance_time() and every request also check deadlines.
        self._timers.append(
            loop.call_later(self.state.config.ack_timeout + 0.05, self.check_deadlines)
        )

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def check_deadlines(self) -> None:
        """Record each interaction left unacknowledged past the window (once)."""
        now = self.state.clock.monotonic()
        for interaction in self.by_id.values():
            if (
                interaction.callback_type is None
                and not interaction.timed_out
                and now - interaction.created_at > self.state.config.ack_timeout
            ):
                interaction.timed_out = True
                self.state.violation(
                    "interaction_timeout",
                    f"interaction {interaction.id} was not acknowledged within "
                    f"{self.state.config.ack_timeout} s (the user sees 'did not respond')",
                    interaction_id=interaction.id,
                )

    # -- POST /interactions/{id}/{token}/callback --------------------------------------------

    def callback(
        self,
        interaction_id: int,
        token: str,
        body: Any,
        files: Sequence[RecordedFile],
        *,
        with_response: bool,
    ) -> JSON | None:
        interaction = self.by_id.get(interaction_id)
        if interaction is None or interaction.token != token:
            raise errors.unknown_interaction("unknown_interaction")
        if interaction.callback_type is not None:
            raise errors.already_acknowledged()
        age = self.state.clock.monotonic() - interaction.created_at
        if age > self.state.config.ack_timeout:
            raise errors.DiscordHTTPError(
                404,
                10062,
                "Unknown interaction",
                violation="late_acknowledgement",
            )
        if not isinstance(body, dict):
            raise errors.invalid_form_body(
                [FieldError((), "DICT_TYPE_CONVERT", "Only dictionaries may be used.")],
                violation="invalid_callback",
            )
        callback_type = body.get("type")
        data: JSON = body.get("data") or {}
        allowed = ALLOWED_CALLBACKS.get(interaction.type, frozenset())
        if callback_type not in allowed:
            raise errors.invalid_form_body(
                [
                    FieldError(
                        ("type",),
                        "INTERACTION_CALLBACK_TYPE_INVALID",
                        f"Callback type {callback_type} is not valid for interaction type "
                        f"{interaction.type} (allowed: {sorted(allowed)})",
                    )
                ],
                violation="invalid_callback_type",
            )
        message = self._apply_callback(interaction, callback_type, data, files)
        interaction.callback_type = callback_type
        interaction.callback_data = data
        interaction.acknowledged_at = self.state.clock.monotonic()
        self.state.recorder.signal.changed()
        if not with_response:
            return None
        return self._callback_response(interaction, callback_type, message)

    def _apply_callback(
        self,
        interaction: InteractionState,
        callback_type: int,
        data: JSON,
        files: Sequence[RecordedFile],
    ) -> StoredMessage | None:
        state = self.state
        metadata = self._metadata(interaction)
        if callback_type == MESSAGE:
            message = state.create_message(
                interaction.channel,
                data,
                files,
                message_type=20 if interaction.type == APPLICATION_COMMAND else 0,
                allowed_flags=INTERACTION_FLAGS,
                interaction_id=interaction.id,
                interaction_metadata=metadata,
            )
            interaction.original_message_id = message.id
            return message
        if callback_type == DEFERRED_MESSAGE:
            message = state.create_message(
                interaction.channel,
                {},
                [],
                message_type=20 if interaction.type == APPLICATION_COMMAND else 0,
                forced_flags=FLAG_LOADING | ((data.get("flags") or 0) & FLAG_EPHEMERAL),
                interaction_id=interaction.id,
                interaction_metadata=metadata,
            )
            interaction.original_message_id = message.id
            return message
        if callback_type in (DEFERRED_UPDATE, UPDATE):
            source = self._source_message(interaction)
            if callback_type == UPDATE:
                state.edit_message(source, data, files)
            interaction.original_message_id = source.id
            return source
        if callback_type == MODAL:
            found = validate_modal(data, state.config.limits)
            if found:
                raise errors.invalid_form_body(found, violation="invalid_modal")
            interaction.modal = data
            return None
        if callback_type == AUTOCOMPLETE_RESULT:
            found = validate_autocomplete(data, state.config.limits)
            if found:
                raise errors.invalid_form_body(found, violation="invalid_autocomplete")
            interaction.choices = list(data.get("choices") or [])
            return None
        return None

    def _source_message(self, interaction: InteractionState) -> StoredMessage:
        if interaction.source_message_id is None:
            raise errors.invalid_form_body(
                [
                    FieldError(
                        ("type",),
                        "INTERACTION_CALLBACK_TYPE_INVALID",
                        "This interaction has no message to update",
                    )
                ],
                violation="invalid_callback_type",
            )
        message = self.state.messages.get(interaction.source_message_id)
        if message is None or message.deleted:
            raise errors.unknown_message()
        return message

    def _metadata(self, interaction: InteractionState) -> JSON:
        metadata: JSON = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": interaction.user.payload(),
            "authorizing_integration_owners": interaction.payload.get(
                "authorizing_integration_owners", {}
            ),
        }
        if interaction.type == APPLICATION_COMMAND:
            metadata["name"] = interaction.payload["data"]["name"]
        return metadata

    def _callback_response(
        self, interaction: InteractionState, callback_type: int, message: StoredMessage | None
    ) -> JSON:
        summary: JSON = {"id": str(interaction.id), "type": interaction.type}
        body: JSON = {"interaction": summary}
        if message is not None:
            summary["response_message_id"] = str(message.id)
            summary["response_message_loading"] = message.loading
            summary["response_message_ephemeral"] = message.ephemeral
            body["resource"] = {"type": callback_type, "message": message.payload()}
        elif callback_type != MODAL:
            body["resource"] = {"type": callback_type}
        return body

    # -- /webhooks/{application_id}/{token}... -----------------------------------------------

    def _by_token(self, application_id: int, token: str) -> InteractionState:
        if application_id != self.state.config.application_id:
            raise errors.unknown_webhook()
        interaction = self.by_token.get(token)
        if interaction is None:
            raise errors.invalid_webhook_token("unknown_interaction_token")
        age = self.state.clock.monotonic() - interaction.created_at
        if age > self.state.config.token_lifetime:
            raise errors.invalid_webhook_token("expired_interaction_token")
        if interaction.callback_type is None:
            raise errors.DiscordHTTPError(
                404, 10015, "Unknown Webhook", violation="followup_before_acknowledgement"
            )
        return interaction

    def interaction_for_token(self, token: str) -> InteractionState | None:
        return self.by_token.get(token)

    def create_followup(
        self, application_id: int, token: str, body: JSON, files: Sequence[RecordedFile]
    ) -> StoredMessage:
        interaction = self._by_token(application_id, token)
        original = self._original(interaction)
        if (
            interaction.callback_type == DEFERRED_MESSAGE
            and original is not None
            and original.loading
        ):
            # Discord fills the "thinking" message with the first follow-up after a deferral;
            # its ephemerality comes from the deferral, not from this body's flags.
            self.state.edit_message(original, body, files)
            message = original
        else:
            message = self.state.create_message(
                interaction.channel,
                body,
                files,
                allowed_flags=INTERACTION_FLAGS,
                interaction_id=interaction.id,
                interaction_metadata=self._metadata(interaction),
            )
        interaction.followup_ids.append(message.id)
        self.state.recorder.signal.changed()
        return message

    def webhook_message(self, application_id: int, token: str, ref: str) -> StoredMessage:
        """The message ``ref`` (``@original`` or a follow-up id) of this interaction."""
        interaction = self._by_token(application_id, token)
        if ref == "@original":
            message = self._original(interaction)
        else:
            try:
                message_id = int(ref)
            except ValueError:
                raise errors.unknown_message() from None
            owned = message_id == interaction.original_message_id or (
                message_id in interaction.followup_ids
            )
            message = self.state.messages.get(message_id) if owned else None
        if message is None or message.deleted:
            raise errors.unknown_message()
        return message

    def _original(self, interaction: InteractionState) -> StoredMessage | None:
        if interaction.original_message_id is None:
            return None
        return self.state.messages.get(interaction.original_message_id)
