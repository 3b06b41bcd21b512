"""Group sessions in Discord (issue 13): /session start and the host controls, /session mine
(a member's own entries), /submit, the card's Submit button and its form, the vote button on
each entry, and the host panel's Approve and Reject (with a reason form; the member is told
either decision by DM).

A session lives in a public thread the bot opens in the host's channel; its card and entries
are posted there. The host panel never is: it goes to the server's review channel (``/settings
server review_channel``) or, without one, to a private thread only hosts (and members with
Manage Threads) can see. Every answer to a member is ephemeral, so nothing says who entered.
Buttons and forms are stateless: their custom_ids (``bot.session_ids``) name a session or an
entry, and the service checks the server and the clicker's rights at every click.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import discord
from discord import app_commands

from bot.customid import join
from bot.errors import UserFacingError
from bot.features.base import Interaction, answer, requester_of, thinking
from bot.render_sessions import (
    render_entry_decided,
    render_entry_received,
    render_my_entries,
    render_panel,
    render_vote,
)
from bot.review_poster import ReviewPoster
from bot.router import ButtonRouter, ModalRoute, Route
from bot.services.sessions import PANEL_THREADS_KEY, SessionService, StartInput
from bot.session_ids import (
    PANEL_CODE,
    PROMPT_FIELD,
    REASON_FIELD,
    REJECT_FORM,
    SUBMIT_CODE,
    SUBMIT_FORM,
    VOTE_CODE,
    decode_id,
    decode_panel,
    panel_id,
    submit_id,
)
from bot.session_runner import SessionRunner
from storage import session_rules as rules
from storage.types import EntryState, EntryView, SessionView

log = logging.getLogger(__name__)
_NONE = discord.AllowedMentions.none()
_PROMPT_MAX = 1000

ROUNDS = app_commands.Range[int, rules.ROUNDS[0], rules.ROUNDS[1]]
ROUND_MINUTES = app_commands.Range[int, rules.ROUND_SECONDS[0] // 60, rules.ROUND_SECONDS[1] // 60]
VOTING_MINUTES = app_commands.Range[
    int, rules.VOTING_SECONDS[0] // 60, rules.VOTING_SECONDS[1] // 60
]
ENTRIES = app_commands.Range[int, rules.ENTRIES_PER_MEMBER[0], rules.ENTRIES_PER_MEMBER[1]]
VOTES = app_commands.Range[int, rules.VOTES_PER_MEMBER[0], rules.VOTES_PER_MEMBER[1]]
POOL = app_commands.Range[float, rules.POOL_SECONDS[0], rules.POOL_SECONDS[1]]
EXTEND = app_commands.Range[int, 1, rules.EXTEND_SECONDS[1] // 60]


class TextForm(discord.ui.Modal):
    """One text field; routed by its custom_id (stateless, see ``ButtonRouter.send_modal``)."""

    def __init__(self, title: str, custom_id: str, field: str, label: str, limit: int) -> None:
        super().__init__(title=title[:45], timeout=None, custom_id=custom_id)
        self.add_item(
            discord.ui.TextInput(
                label=label,
                custom_id=field,
                style=discord.TextStyle.paragraph,
                max_length=limit,
                required=True,
            )
        )


class SessionCommands(app_commands.Group):
    """/session: start one, and the host's controls."""

    def __init__(self, feature: SessionFeature) -> None:
        super().__init__(
            name="session", description="Group sessions: themed rounds, entries and votes"
        )
        self.feature = feature

    @app_commands.command(name="start", description="Host a group session in this channel")
    @app_commands.describe(
        theme="The session's theme",
        rounds="How many rounds (1-10)",
        themes="One theme per round, separated by ';' (sets the rounds)",
        round_minutes="Minutes each round takes submissions",
        voting_minutes="Minutes of voting after each round",
        entries_per_member="Entries each member may make per round",
        votes_per_member="Votes each member has per round",
        approval="The host approves each entry before it is generated",
        anonymous="Hide authors until each round ends",
        pool="Who pays: each member from their quota, or a server pool",
        pool_gpu_seconds="GPU-seconds set aside from the server's allowance (pool:server)",
        mode="Only this mode for entries",
        aspect="Only this aspect ratio for entries, e.g. 1:1",
    )
    async def start(
        self,
        interaction: Interaction,
        theme: app_commands.Range[str, 1, 200],
        rounds: ROUNDS = 1,
        themes: app_commands.Range[str, 1, 1000] | None = None,
        round_minutes: ROUND_MINUTES = 10,
        voting_minutes: VOTING_MINUTES = 5,
        entries_per_member: ENTRIES = 1,
        votes_per_member: VOTES = 1,
        approval: bool = False,
        anonymous: bool = False,
        pool: Literal["members", "server"] = "members",
        pool_gpu_seconds: POOL | None = None,
        mode: Literal["fast", "quality"] | None = None,
        aspect: app_commands.Range[str, 3, 9] | None = None,
    ) -> None:
        command = StartInput(
            theme=theme,
            rounds=rounds,
            themes=themes or "",
            round_minutes=round_minutes,
            voting_minutes=voting_minutes,
            entries_per_member=entries_per_member,
            votes_per_member=votes_per_member,
            approval=approval,
            anonymous=anonymous,
            pool=pool,
            pool_gpu_seconds=pool_gpu_seconds or 0.0,
            mode=mode,
            aspect=aspect,
        )
        await self.feature.start(interaction, command)

    @app_commands.command(name="mine", description="Your own entries here and their states")
    async def mine(self, interaction: Interaction) -> None:
        await self.feature.mine(interaction)

    @app_commands.command(name="pause", description="Host: stop the session's clock")
    async def pause(self, interaction: Interaction) -> None:
        await self.feature.control(interaction, "pause")

    @app_commands.command(name="resume", description="Host: restart the session's clock")
    async def resume(self, interaction: Interaction) -> None:
        await self.feature.control(interaction, "resume")

    @app_commands.command(name="extend", description="Host: more time for this phase")
    @app_commands.describe(minutes="Minutes to add to the submissions or the voting")
    async def extend(self, interaction: Interaction, minutes: EXTEND) -> None:
        await self.feature.control(interaction, "extend", minutes=minutes)

    @app_commands.command(name="skip", description="Host: close submissions now; voting next")
    async def skip(self, interaction: Interaction) -> None:
        await self.feature.control(interaction, "skip")

    @app_commands.command(name="end", description="Host: end the session now")
    async def end(self, interaction: Interaction) -> None:
        await self.feature.control(interaction, "end")

    @app_commands.command(name="remove_entry", description="Host: take an entry out")
    @app_commands.describe(entry="The entry's id", reason="For the audit log")
    async def remove_entry(
        self,
        interaction: Interaction,
        entry: app_commands.Range[str, 1, 40],
        reason: app_commands.Range[str, 1, 300] = "removed by the host",
    ) -> None:
        entry_id = entry.strip().lower()
        try:
            decode_id(entry_id)
        except ValueError as exc:
            raise UserFacingError(f"`{entry_id[:40]}` is not an entry id") from exc
        await self.feature.control(interaction, "remove_entry", entry_id=entry_id, reason=reason)

    @app_commands.command(name="remove_member", description="Host: remove a participant")
    @app_commands.describe(member="Who may no longer enter or vote", reason="For the audit log")
    async def remove_member(
        self,
        interaction: Interaction,
        member: discord.User,
        reason: app_commands.Range[str, 1, 300] = "removed by the host",
    ) -> None:
        await self.feature.control(interaction, "remove_member", member_id=member.id, reason=reason)


class SessionFeature:
    """Group sessions: commands, the card's Submit, votes and the host panel."""

    def __init__(
        self, service: SessionService, runner: SessionRunner, poster: ReviewPoster | None = None
    ) -> None:
        self.service = service
        self.runner = runner
        runner.post_panel = self._post_panel
        self.poster = poster

    def register(self, tree: app_commands.CommandTree[Any], router: ButtonRouter) -> None:
        self.router = router
        tree.add_command(SessionCommands(self))
        tree.add_command(
            app_commands.Command(
                name="submit",
                description="Enter the group session of this thread",
                callback=self.submit_command,
            )
        )
        router.add(
            Route(
                codes=frozenset({SUBMIT_CODE}),
                decode=lambda code, payload: decode_id(payload),
                handle=self.on_submit_button,
            )
        )
        router.add(
            Route(
                codes=frozenset({VOTE_CODE}),
                decode=lambda code, payload: decode_id(payload),
                handle=self.on_vote,
            )
        )
        router.add(
            Route(
                codes=frozenset({PANEL_CODE}),
                decode=lambda code, payload: decode_panel(payload),
                handle=self.on_panel,
            )
        )
        router.add_modal(ModalRoute(SUBMIT_FORM, decode_id, self.on_submit_form))
        router.add_modal(ModalRoute(REJECT_FORM, decode_id, self.on_reject_form))

    # -- starting --------------------------------------------------------------------------

    async def start(self, interaction: Interaction, command: StartInput) -> None:
        await thinking(interaction)
        requester = requester_of(interaction)
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            raise UserFacingError("start a group session in a server's text channel")
        session = await self.service.start(requester, command)
        try:
            thread = await channel.create_thread(
                name=f"Session: {command.theme}"[:100],
                type=discord.ChannelType.public_thread,
                auto_archive_duration=1440,
            )
        except discord.HTTPException as exc:
            await self.service.store.end(session.id, requester.user_id, "no thread")
            raise UserFacingError(
                f"I could not open the session's thread here ({exc.status}); it was not started. "
                "I need Create Public Threads and Send Messages in Threads."
            ) from exc
        await self.service.store.attach_thread(session.id, thread.id)
        session, text = await self.service.card(session.id)
        card = await thread.send(
            text, view=self._card_view(session), allowed_mentions=_NONE, nonce=f"sc{session.id}"
        )
        await self.service.store.posts.attach_card(session.id, card.id)
        await self.service.store.posts.mark_card_shown(session.id, session.version)
        note = ""
        if session.approval:
            try:
                await self._panel_channel(session)
            except discord.HTTPException as exc:
                log.warning("host panel of session %s not opened: %s", session.id, exc)
                note = (
                    " I could not open the host panel's private thread: set a review channel "
                    "with /settings server review_channel."
                )
        self.runner.wake()
        await answer(interaction, f"Session started in {thread.mention}.{note}")

    def _card_view(self, session: SessionView) -> discord.ui.View:
        if not session.live:
            return discord.ui.View()
        return self.router.view([[("Submit an entry", submit_id(session.id))]])

    async def _panel_channel(self, session: SessionView) -> discord.abc.Messageable:
        """Where the host panel goes: the review channel, else the server's private panel
        thread (made once, in the session's channel), with the host added."""
        client = self.runner.client()
        review_channel = (await self.service.review.rules(session.guild_id)).review_channel
        if review_channel is not None:
            return client.get_partial_messageable(review_channel)
        prefs = self.service.prefs
        guild = await prefs.get_guild_settings(session.guild_id)
        stored = dict(guild.get(PANEL_THREADS_KEY) or {})
        thread_id = stored.get(str(session.channel_id))
        thread: discord.Thread | None = None
        if thread_id is not None:
            found = client.get_channel(int(thread_id))
            thread = found if isinstance(found, discord.Thread) else None
        if thread is None:
            base = client.get_channel(session.channel_id)
            if not isinstance(base, discord.TextChannel):
                raise UserFacingError("the session's channel is gone")
            thread = await base.create_thread(
                name="Session host panel", type=discord.ChannelType.private_thread, invitable=False
            )
            stored[str(session.channel_id)] = thread.id
            await prefs.update_guild_settings(session.guild_id, {PANEL_THREADS_KEY: stored})
        try:
            await thread.add_user(discord.Object(session.host_id))
        except discord.HTTPException as exc:
            log.info("could not add host %s to panel thread: %s", session.host_id, exc)
        return thread

    # -- entries ---------------------------------------------------------------------------

    async def submit_command(
        self, interaction: Interaction, prompt: app_commands.Range[str, 1, _PROMPT_MAX]
    ) -> None:
        await thinking(interaction)
        requester = requester_of(interaction)
        session = await self.service.session_here(requester)
        await self._enter(interaction, session, prompt)

    async def on_submit_button(self, interaction: Interaction, session_id: str) -> None:
        session = await self.service.find(requester_of(interaction), session_id)
        if not session.live:
            raise UserFacingError("this session has ended")
        await self.router.send_modal(
            interaction,
            TextForm(
                f"Enter: {session.round_theme}",
                join(SUBMIT_FORM, session.id),
                PROMPT_FIELD,
                "Your prompt (options like --ar work)",
                _PROMPT_MAX,
            ),
        )

    async def on_submit_form(
        self, interaction: Interaction, session_id: str, values: dict[str, str]
    ) -> None:
        await thinking(interaction)
        session = await self.service.find(requester_of(interaction), session_id)
        await self._enter(interaction, session, values.get(PROMPT_FIELD, ""))

    async def _enter(self, interaction: Interaction, session: SessionView, prompt: str) -> None:
        entry = await self.service.submit(requester_of(interaction), session, prompt)
        self.runner.wake()
        self.runner.entries_changed()
        if session.approval and entry.state is EntryState.PENDING:
            await self._post_panel(session, entry)
        await answer(interaction, render_entry_received(entry, session.approval))

    async def _post_panel(self, session: SessionView, entry: EntryView) -> None:
        try:
            target = await self._panel_channel(session)
            view = self.router.view(
                [[("Approve", panel_id("a", entry.id)), ("Reject", panel_id("r", entry.id))]]
            )
            message = await target.send(
                render_panel(entry, session),
                view=view,
                allowed_mentions=_NONE,
                nonce=f"sp{entry.id}",
            )
        except (discord.HTTPException, UserFacingError) as exc:
            # Owed until posted: the sessions loop retries it (``SessionRunner.post_panel``).
            log.warning("host panel for entry %s not posted: %s", entry.id, exc)
            return
        await self.service.store.attach_entry_message(entry.id, panel_message_id=message.id)

    # -- votes and the panel ---------------------------------------------------------------

    async def on_vote(self, interaction: Interaction, entry_id: str) -> None:
        await thinking(interaction)
        result, session = await self.service.vote(requester_of(interaction), entry_id)
        await answer(interaction, render_vote(result.voted, result.used, session.votes_per_member))

    async def on_panel(self, interaction: Interaction, ref: tuple[str, str]) -> None:
        action, entry_id = ref
        requester = requester_of(interaction)
        if action == "r":
            entry = await self.service.store.entry(entry_id)
            session = await self.service.store.get(entry.session_id)
            await self.service.check_control(requester, session)
            await self.router.send_modal(
                interaction,
                TextForm(
                    f"Reject entry {entry_id}",
                    join(REJECT_FORM, entry_id),
                    REASON_FIELD,
                    "Reason (the member is told)",
                    300,
                ),
            )
            return
        await thinking(interaction)
        await self._decided(interaction, entry_id, True, "")

    async def on_reject_form(
        self, interaction: Interaction, entry_id: str, values: dict[str, str]
    ) -> None:
        await thinking(interaction)
        await self._decided(interaction, entry_id, False, values.get(REASON_FIELD, ""))

    async def _decided(
        self, interaction: Interaction, entry_id: str, approve: bool, reason: str
    ) -> None:
        decision, session = await self.service.decide(
            requester_of(interaction), entry_id, approve, reason
        )
        entry = decision.entry
        self.runner.wake()
        self.runner.entries_changed()
        if decision.decided and entry.panel_message_id is not None and interaction.message:
            try:
                await interaction.message.edit(
                    content=render_panel(entry, session), view=discord.ui.View()
                )
            except discord.HTTPException as exc:
                log.info("panel of entry %s not updated: %s", entry.id, exc)
        if not decision.decided:
            await answer(
                interaction,
                f"Entry `{entry.id}` was already {entry.state.value} by "
                f"<@{entry.decided_by}>; nothing changed.",
            )
            return
        await self._tell_member(entry, session)
        if approve:
            await answer(interaction, f"Entry `{entry.id}` approved: it is queued.")
            return
        await answer(interaction, f"Entry `{entry.id}` rejected; the member is told why.")

    async def _tell_member(self, entry: EntryView, session: SessionView) -> None:
        """DM the member the host's decision about their entry, best effort: a member who
        closed their DMs still has ``/session mine``. The nonce (one per entry and decision)
        keeps a retried send from posting twice."""
        approved = entry.state is EntryState.APPROVED
        kind, nonce = ("approval", "sa") if approved else ("rejection", "sj")
        try:
            user = await self.runner.client().fetch_user(entry.member_id)
            channel = await user.create_dm()
            await channel.send(
                render_entry_decided(entry, session),
                allowed_mentions=_NONE,
                nonce=f"{nonce}{entry.id}",
            )
        except discord.HTTPException as exc:
            log.info("%s of entry %s not sent to its member: %s", kind, entry.id, exc)

    async def mine(self, interaction: Interaction) -> None:
        """/session mine: the caller's own entries, ephemeral (so even an anonymous session's
        entries may show: nobody else sees the answer)."""
        await thinking(interaction)
        mine = await self.service.mine(requester_of(interaction))
        await answer(
            interaction,
            render_my_entries(mine.session, mine.entries, mine.places, mine.votes_used),
        )

    # -- host controls ---------------------------------------------------------------------

    async def control(self, interaction: Interaction, action: str, **values: Any) -> None:
        await thinking(interaction)
        text = await self.service.control(requester_of(interaction), action, **values)
        self.runner.wake()
        await answer(interaction, text)
