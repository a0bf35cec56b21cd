//! Where a command's answer lives and how it is updated: the interaction's original response, a
//! follow-up message, or, once the 15-minute interaction token is spent, a plain channel message.
//!
//! A slash command's surface (`Surface::command`) carries its `Cmd`: its private follow-ups go
//! out with `Cmd::send` (poise's `ctx.send` with the gateway). Editing or deleting the deferred
//! original stays on the interaction token, because poise 0.7 gives a `ReplyHandle` only for a
//! message sent with `ctx.send`, and `ctx.send` after `ctx.defer()` posts a new follow-up instead
//! of filling the deferred response. Buttons, menus and forms have no poise context at all: their
//! first response goes through their `Ack`.

use super::transport::{Ack, Cmd};
use poise::CreateReply;
use serenity::all::{
    Builder, ChannelId, CreateAllowedMentions, CreateAttachment, CreateEmbed,
    CreateInteractionResponse, CreateInteractionResponseFollowup, CreateInteractionResponseMessage,
    CreateMessage, EditAttachments, EditInteractionResponse, EditMessage, Http, MessageId,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Interaction tokens last 15 minutes; stop using one a little before.
const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60 + 30);

/// One rendering of the message.
#[derive(Clone, Default)]
pub struct View {
    pub content: Option<String>,
    pub embeds: Vec<CreateEmbed>,
    pub attachment: Option<(String, Vec<u8>)>,
    /// Buttons; an empty list removes any.
    pub components: Vec<serenity::all::CreateActionRow>,
}

impl View {
    pub fn embed(embed: CreateEmbed) -> View {
        View {
            embeds: vec![embed],
            ..View::default()
        }
    }
}

#[derive(Clone, Copy)]
enum Target {
    Original,
    FollowUp(MessageId),
}

pub struct Surface<'a> {
    /// The slash command this answers, if it is one: its follow-ups go through its `Cmd`.
    command: Option<Cmd<'a>>,
    /// Only the requester sees it: nothing of it may go to the channel.
    private: bool,
    http: Arc<Http>,
    token: String,
    target: Target,
    channel: ChannelId,
    created: Instant,
    /// Set once we fell back to a channel message.
    channel_message: Mutex<Option<MessageId>>,
}

fn no_mentions() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

impl Surface<'static> {
    /// The original response of a component or form interaction that was already acknowledged.
    pub fn original(http: Arc<Http>, token: &str, channel: ChannelId, created: Instant) -> Self {
        Surface {
            command: None,
            private: false,
            http,
            token: token.to_string(),
            target: Target::Original,
            channel,
            created,
            channel_message: Mutex::new(None),
        }
    }

    /// Acknowledge an interaction with a new public message ("thinking…") and return it as the
    /// surface its answer is edited into.
    pub async fn new_message(
        http: Arc<Http>,
        ack: &Ack,
        token: &str,
        channel: ChannelId,
    ) -> serenity::Result<Self> {
        // A component or form: outside any command invocation, so no poise context to defer with.
        ack.respond(CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new(),
        ))
        .await?;
        Ok(Surface::original(http, token, channel, Instant::now()))
    }

    /// A follow-up message created with this interaction's token.
    pub fn follow_up(
        http: Arc<Http>,
        token: &str,
        message: MessageId,
        channel: ChannelId,
        created: Instant,
    ) -> Self {
        Surface {
            target: Target::FollowUp(message),
            ..Surface::original(http, token, channel, created)
        }
    }
}

impl<'a> Surface<'a> {
    /// The original response of a slash command that `ctx.defer()` (or `ctx.defer_ephemeral()`)
    /// acknowledged just now.
    /// A `private` one (deferred ephemerally) never falls back to a channel message.
    pub fn command(cmd: Cmd<'a>, private: bool) -> Surface<'a> {
        Surface {
            command: Some(cmd),
            private,
            http: cmd.http.clone(),
            token: cmd.interaction.token.clone(),
            target: Target::Original,
            channel: cmd.interaction.channel_id,
            created: Instant::now(),
            channel_message: Mutex::new(None),
        }
    }

    /// Replace the message with `view`. Failures are logged, never fatal: a report that cannot
    /// be edited in is posted to the channel instead.
    pub async fn show(&self, view: View) {
        let mut fallback = self.channel_message.lock().await;
        if fallback.is_none() && self.created.elapsed() < TOKEN_LIFETIME {
            match self.edit_via_token(&view).await {
                Ok(()) => return,
                Err(e) if self.private => {
                    // As a failed command: "internal error, reference X", privately.
                    let reference = super::internal_error(&e, "private answer");
                    let notice = super::render::notice(
                        "Internal error",
                        &super::internal_error_text(&reference),
                    );
                    self.whisper(notice, Vec::new()).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not edit the interaction message; posting to the channel");
                }
            }
        }
        if self.private {
            tracing::warn!(
                "the token of a private answer has expired; it is not posted to the channel"
            );
            return;
        }
        match self.post_or_edit_channel(&view, *fallback).await {
            Ok(id) => *fallback = Some(id),
            Err(e) => tracing::error!(error = %e, "could not post to the channel either"),
        }
    }

    async fn edit_via_token(&self, view: &View) -> serenity::Result<()> {
        // Poise has no handle on a deferred response or a component's message: the token edits it.
        match self.target {
            Target::Original => {
                let mut edit = EditInteractionResponse::new()
                    .embeds(view.embeds.clone())
                    .content(view.content.clone().unwrap_or_default())
                    .allowed_mentions(no_mentions())
                    .components(view.components.clone());
                edit = match &view.attachment {
                    Some((name, bytes)) => edit.attachments(
                        EditAttachments::new()
                            .add(CreateAttachment::bytes(bytes.clone(), name.clone())),
                    ),
                    None => edit.clear_attachments(),
                };
                edit.execute(&*self.http, &self.token).await.map(|_| ())
            }
            Target::FollowUp(id) => {
                let mut edit = CreateInteractionResponseFollowup::new()
                    .embeds(view.embeds.clone())
                    .content(view.content.clone().unwrap_or_default())
                    .components(view.components.clone())
                    .allowed_mentions(no_mentions());
                if let Some((name, bytes)) = &view.attachment {
                    edit = edit.add_file(CreateAttachment::bytes(bytes.clone(), name.clone()));
                }
                edit.execute(&*self.http, (Some(id), &self.token))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// The token is spent or refused: a plain channel message, which no interaction API covers.
    async fn post_or_edit_channel(
        &self,
        view: &View,
        existing: Option<MessageId>,
    ) -> serenity::Result<MessageId> {
        match existing {
            Some(id) => {
                let mut edit = EditMessage::new()
                    .embeds(view.embeds.clone())
                    .content(view.content.clone().unwrap_or_default())
                    .components(view.components.clone())
                    .allowed_mentions(no_mentions());
                edit = match &view.attachment {
                    Some((name, bytes)) => edit.attachments(
                        EditAttachments::new()
                            .add(CreateAttachment::bytes(bytes.clone(), name.clone())),
                    ),
                    None => edit,
                };
                self.channel
                    .edit_message(&*self.http, id, edit)
                    .await
                    .map(|m| m.id)
            }
            None => {
                let mut message = CreateMessage::new()
                    .embeds(view.embeds.clone())
                    .components(view.components.clone())
                    .allowed_mentions(no_mentions());
                if let Some(content) = &view.content {
                    message = message.content(content.clone());
                }
                if let Some((name, bytes)) = &view.attachment {
                    message =
                        message.add_file(CreateAttachment::bytes(bytes.clone(), name.clone()));
                }
                self.channel
                    .send_message(&*self.http, message)
                    .await
                    .map(|m| m.id)
            }
        }
    }

    /// Remove the public original response (before an ephemeral follow-up takes over).
    pub async fn retract(&self) {
        if let Target::Original = self.target {
            // No `ReplyHandle` exists for a deferred response (see the module's note): by token.
            if let Err(e) = self
                .http
                .delete_original_interaction_response(&self.token)
                .await
            {
                tracing::warn!(error = %e, "could not delete the deferred response");
            }
        }
    }

    /// An ephemeral follow-up only the person who asked sees.
    pub async fn whisper(
        &self,
        embed: CreateEmbed,
        components: Vec<serenity::all::CreateActionRow>,
    ) {
        if let Some(cmd) = self.command {
            let reply = CreateReply::default()
                .ephemeral(true)
                .embed(embed)
                .components(components)
                .allowed_mentions(no_mentions());
            if let Err(e) = cmd.send(reply).await {
                tracing::warn!(error = %e, "could not send an ephemeral follow-up");
            }
            return;
        }
        // A component or form: no poise context, so the follow-up goes out by token.
        let follow_up = CreateInteractionResponseFollowup::new()
            .ephemeral(true)
            .embed(embed)
            .components(components)
            .allowed_mentions(no_mentions());
        if let Err(e) = follow_up.execute(&*self.http, (None, &self.token)).await {
            tracing::warn!(error = %e, "could not send an ephemeral follow-up");
        }
    }
}

/// Tell the person, privately, that rdp-doctor failed inside, with the reference its log line
/// carries: as the first response if the interaction (a click or a form, answered through `ack`
/// and `token`) has none yet, else as a follow-up.
pub async fn tell_internal_error(http: &Http, ack: &Ack, token: &str, reference: &str) {
    // Components and forms arrive outside a command invocation: poise cannot answer them.
    let embed = super::render::notice("Internal error", &super::internal_error_text(reference));
    let first = CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .ephemeral(true)
            .embed(embed.clone())
            .allowed_mentions(no_mentions()),
    );
    if ack.respond(first).await.is_ok() {
        return;
    }
    let follow_up = CreateInteractionResponseFollowup::new()
        .ephemeral(true)
        .embed(embed)
        .allowed_mentions(no_mentions());
    if let Err(e) = follow_up.execute(http, (None, token)).await {
        tracing::warn!(%reference, error = %e, "could not tell the person about an internal error");
    }
}
