//! One front end, two transports. With the gateway (`rdp-doctor bot`) interactions arrive on the
//! websocket and their first response goes to Discord's callback route; with the HTTP
//! interactions endpoint (`rdp-doctor serve`) they arrive as signed POSTs and the first response
//! is the HTTP response itself. Everything after it (follow-ups, edits of the original) goes to
//! the webhook routes either way, with the interaction's token.
//!
//! [`Ack`] sends an interaction's first response over either transport; [`Cmd`] is a slash
//! command's context over either: poise's `ApplicationContext` (gateway) or the interaction with
//! its `Ack` (HTTP). Commands, buttons, menus and forms take these, never the transport.

use super::{AppContext, Bot, Error};
use poise::CreateReply;
use serenity::all::{
    Builder, CommandInteraction, CreateInteractionResponse, CreateInteractionResponseFollowup,
    CreateInteractionResponseMessage, Http, InteractionId,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// How an interaction's first response goes out. Cheap to clone.
#[derive(Clone)]
pub struct Ack(Arc<Via>);

enum Via {
    /// Discord's `POST /interactions/{id}/{token}/callback` (gateway mode).
    Callback {
        http: Arc<Http>,
        id: InteractionId,
        token: String,
        /// When the interaction arrived, for the acknowledgement latency.
        received: Instant,
    },
    /// The HTTP request Discord is waiting on (HTTP mode): the first response is its answer.
    Endpoint {
        waiting: Mutex<Option<oneshot::Sender<FirstResponse>>>,
        first: Arc<AcksFirst>,
    },
}

/// Acknowledgements before work, in HTTP mode: the requests this process has received and not
/// yet answered, and when the last arrived. A handler that has sent its first response goes on
/// with its work (the ARM requests of a check) only once none is left unanswered and none has
/// arrived for [`QUIET`] (a burst's requests reach the handlers a few at a time, with gaps of
/// well under that), or after [`ACKS_FIRST_WITHIN`]: in a storm of interactions every one gets
/// its deferral before the checks of the first ones take the CPU, since Discord drops an
/// interaction not answered within 3 s, and a check started some milliseconds later loses
/// nothing.
///
/// The waiting handlers do not watch the count themselves: one keeper task does, while any
/// waits, and opens the gate for all of them at once. (Each handler watching it woke every
/// handler at each answer and at each [`QUIET`] interval, thousands of wake-ups in a burst,
/// taking CPU from the deferrals the gate is there to hurry.)
#[derive(Default)]
pub struct AcksFirst {
    unanswered: std::sync::atomic::AtomicUsize,
    last_received: Mutex<Option<tokio::time::Instant>>,
    /// Told when the last unanswered request is answered (the keeper waits on it).
    none_left: tokio::sync::Notify,
    /// Told, all at once, when work may go on (the handlers wait on it).
    open: tokio::sync::Notify,
    /// Whether a keeper task is running.
    keeper: std::sync::atomic::AtomicBool,
}

/// The longest a handler's work waits for the other requests' answers.
const ACKS_FIRST_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);

/// How long no request may have arrived before work goes on.
const QUIET: std::time::Duration = std::time::Duration::from_millis(10);

/// One request received and not yet answered; answered when dropped.
pub struct Unanswered(Arc<AcksFirst>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.0.unanswered.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

impl AcksFirst {
    /// A request arrived: it counts until the returned guard is dropped (with its answer).
    pub fn received(self: &Arc<Self>) -> Unanswered {
        self.unanswered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut last) = self.last_received.lock() {
            *last = Some(tokio::time::Instant::now());
        }
        Unanswered(self.clone())
    }

    /// `Ok` when no request is unanswered and none has arrived for [`QUIET`]; otherwise when
    /// to look again: at an instant, or (`None`) once the unanswered are answered.
    fn quiet(&self) -> Result<(), Option<tokio::time::Instant>> {
        if self.unanswered.load(std::sync::atomic::Ordering::SeqCst) != 0 {
            return Err(None);
        }
        let quiet_at = self
            .last_received
            .lock()
            .ok()
            .and_then(|last| *last)
            .map(|last| last + QUIET);
        match quiet_at {
            Some(at) if tokio::time::Instant::now() < at => Err(Some(at)),
            _ => Ok(()),
        }
    }

    /// Wait until no request is left unanswered and none has arrived for [`QUIET`], at most
    /// `within`.
    async fn none_left(self: &Arc<Self>, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let open = self.open.notified();
        tokio::pin!(open);
        // Listening before looking: an opening after the look is not missed.
        open.as_mut().enable();
        if self.quiet().is_ok() {
            return;
        }
        if !self.keeper.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::spawn(self.clone().keep());
        }
        let _ = tokio::time::timeout_at(deadline, open).await;
    }

    /// The keeper: watches the count until it is quiet, then opens the gate and ends.
    async fn keep(self: Arc<Self>) {
        loop {
            let answered = self.none_left.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            match self.quiet() {
                Ok(()) => break,
                Err(Some(at)) => tokio::time::sleep_until(at).await,
                Err(None) => answered.await,
            }
        }
        // Stood down before the opening: a handler that starts waiting after the opening, and
        // finds it no longer quiet, starts a keeper of its own.
        self.keeper
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.open.notify_waiters();
    }
}

/// A first response for the HTTP handler, and how it tells that the response has gone out.
pub struct FirstResponse {
    pub response: CreateInteractionResponse,
    /// Sent (or dropped) once the HTTP response has been written: follow-ups and edits wait
    /// for it, as Discord knows of no original message before.
    pub written: oneshot::Sender<()>,
}

/// How long a handler waits for its first response to be written before it goes on anyway.
const WRITTEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

impl Ack {
    pub fn callback(http: Arc<Http>, id: InteractionId, token: &str) -> Ack {
        Ack(Arc::new(Via::Callback {
            http,
            id,
            token: token.to_string(),
            received: Instant::now(),
        }))
    }

    /// An `Ack` whose first response arrives on the receiver, for the HTTP handler to answer
    /// Discord's request with. Attachments cannot ride on it: no first response carries any.
    /// Its work after the first response waits for `first` ([`AcksFirst`]).
    pub fn endpoint(first: Arc<AcksFirst>) -> (Ack, oneshot::Receiver<FirstResponse>) {
        let (tx, rx) = oneshot::channel();
        (
            Ack(Arc::new(Via::Endpoint {
                waiting: Mutex::new(Some(tx)),
                first,
            })),
            rx,
        )
    }

    /// Send the first response. A second one fails, as Discord's callback route refuses one
    /// ("already acknowledged").
    pub async fn respond(&self, response: CreateInteractionResponse) -> serenity::Result<()> {
        match &*self.0 {
            Via::Callback {
                http,
                id,
                token,
                received,
            } => {
                response.execute(&**http, (*id, token)).await?;
                acknowledged(*received);
                Ok(())
            }
            Via::Endpoint { waiting, first } => {
                let sender = waiting.lock().ok().and_then(|mut s| s.take());
                let Some(tx) = sender else {
                    return Err(serenity::Error::Other(
                        "the interaction has already been answered",
                    ));
                };
                let (written, sent) = oneshot::channel();
                tx.send(FirstResponse { response, written }).map_err(|_| {
                    serenity::Error::Other("Discord no longer waits for the first response")
                })?;
                // Either way (written, or the connection gone): what follows may go out now,
                // once the other requests have their answers.
                let _ = tokio::time::timeout(WRITTEN_WITHIN, sent).await;
                first.none_left(ACKS_FIRST_WITHIN).await;
                Ok(())
            }
        }
    }

    /// Whether the HTTP request has its answer (always false for the callback route, where
    /// poise or Discord keeps count).
    fn answered(&self) -> bool {
        match &*self.0 {
            Via::Callback { .. } => false,
            Via::Endpoint { waiting, .. } => waiting.lock().map(|s| s.is_none()).unwrap_or(true),
        }
    }
}

/// The first response to a gateway interaction went out (the endpoint's are timed by the HTTP
/// handler, from the request's arrival).
fn acknowledged(received: Instant) {
    crate::metrics::acknowledged(crate::metrics::Transport::Gateway, received.elapsed());
}

/// A slash command's context over either transport.
#[derive(Clone, Copy)]
pub struct Cmd<'a> {
    pub bot: &'a Bot,
    pub interaction: &'a CommandInteraction,
    pub http: &'a Arc<Http>,
    via: CmdVia<'a>,
    /// When the command reached its handler, for the gateway's acknowledgement latency.
    received: Instant,
}

#[derive(Clone, Copy)]
enum CmdVia<'a> {
    /// Poise keeps count of the first response (`ctx.defer`, `ctx.send`).
    Poise(AppContext<'a>),
    Endpoint(&'a Ack),
}

impl<'a> From<AppContext<'a>> for Cmd<'a> {
    fn from(ctx: AppContext<'a>) -> Cmd<'a> {
        Cmd {
            bot: ctx.framework.user_data,
            interaction: ctx.interaction,
            http: &ctx.framework.serenity_context.http,
            via: CmdVia::Poise(ctx),
            received: Instant::now(),
        }
    }
}

impl<'a> Cmd<'a> {
    /// A command that came to the HTTP interactions endpoint.
    pub fn endpoint(
        bot: &'a Bot,
        interaction: &'a CommandInteraction,
        http: &'a Arc<Http>,
        ack: &'a Ack,
    ) -> Cmd<'a> {
        Cmd {
            bot,
            interaction,
            http,
            via: CmdVia::Endpoint(ack),
            received: Instant::now(),
        }
    }

    /// Acknowledge with "thinking…" (public, or `private`ly), before any Azure request.
    pub async fn defer(&self, private: bool) -> Result<(), Error> {
        let first = self.first_on_gateway();
        match self.via {
            CmdVia::Poise(ctx) if private => ctx.defer_ephemeral().await?,
            CmdVia::Poise(ctx) => ctx.defer().await?,
            CmdVia::Endpoint(ack) => {
                let message = CreateInteractionResponseMessage::new().ephemeral(private);
                ack.respond(CreateInteractionResponse::Defer(message))
                    .await?
            }
        }
        self.sent(first);
        Ok(())
    }

    /// Whether no first response has gone out yet over the gateway (poise keeps count).
    fn first_on_gateway(&self) -> bool {
        match self.via {
            CmdVia::Poise(ctx) => !ctx
                .has_sent_initial_response
                .load(std::sync::atomic::Ordering::SeqCst),
            CmdVia::Endpoint(_) => false,
        }
    }

    /// A response went out; if it was the gateway's first, time the acknowledgement.
    fn sent(&self, first: bool) {
        if first {
            acknowledged(self.received);
        }
    }

    /// A message: the first response if there is none yet, else a follow-up (as poise's
    /// `ctx.send`).
    pub async fn send(&self, reply: CreateReply) -> Result<(), Error> {
        let first = self.first_on_gateway();
        match self.via {
            CmdVia::Poise(ctx) => {
                ctx.send(reply).await?;
            }
            CmdVia::Endpoint(ack) if !ack.answered() => {
                let message =
                    reply.to_slash_initial_response(CreateInteractionResponseMessage::new());
                ack.respond(CreateInteractionResponse::Message(message))
                    .await?;
            }
            CmdVia::Endpoint(_) => {
                reply
                    .to_slash_followup_response(CreateInteractionResponseFollowup::new())
                    .execute(&**self.http, (None, &self.interaction.token))
                    .await?;
            }
        }
        self.sent(first);
        Ok(())
    }

    /// A first response poise has no reply for (a form).
    pub async fn respond(&self, response: CreateInteractionResponse) -> Result<(), Error> {
        let first = self.first_on_gateway();
        match self.via {
            CmdVia::Poise(ctx) => {
                self.interaction
                    .create_response(&**self.http, response)
                    .await?;
                ctx.has_sent_initial_response
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            CmdVia::Endpoint(ack) => ack.respond(response).await?,
        }
        self.sent(first);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A burst: a request every 2 ms for 60 ms, each answered at once, while 200 handlers
    /// wait. Each goes on once the burst has been quiet for QUIET, woken once (it was woken at
    /// every answer and every QUIET interval: 2,400 polls of the 200 here).
    #[tokio::test]
    async fn waiting_handlers_are_woken_once_when_a_burst_has_its_answers() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        const HANDLERS: usize = 200;
        let first = Arc::new(AcksFirst::default());
        drop(first.received());
        let polls = Arc::new(AtomicUsize::new(0));
        let handlers: Vec<_> = (0..HANDLERS)
            .map(|_| {
                let (first, polls) = (first.clone(), polls.clone());
                tokio::spawn(async move {
                    let wait = first.none_left(ACKS_FIRST_WITHIN);
                    tokio::pin!(wait);
                    std::future::poll_fn(|cx| {
                        polls.fetch_add(1, Ordering::SeqCst);
                        wait.as_mut().poll(cx)
                    })
                    .await;
                    Instant::now()
                })
            })
            .collect();
        let mut last = Instant::now();
        for _ in 0..30 {
            last = Instant::now();
            drop(first.received());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for handler in handlers {
            let went_on = handler.await.unwrap();
            assert!(
                went_on >= last + QUIET,
                "went on {:?} after the last request",
                went_on - last
            );
            assert!(went_on < last + ACKS_FIRST_WITHIN, "waited for its bound");
        }
        let polls = polls.load(Ordering::SeqCst);
        assert!(
            polls <= 2 * HANDLERS,
            "{polls} polls of {HANDLERS} waiting handlers: each was woken more than once"
        );
    }

    #[tokio::test]
    async fn work_waits_for_the_requests_still_unanswered_and_no_longer_than_its_bound() {
        let first = Arc::new(AcksFirst::default());
        // None unanswered: no wait.
        let started = Instant::now();
        first.none_left(ACKS_FIRST_WITHIN).await;
        assert!(started.elapsed() < Duration::from_millis(50));

        // Two unanswered: the work goes on once the last is answered, not before.
        let (a, b) = (first.received(), first.received());
        let (done_tx, mut done) = oneshot::channel();
        tokio::spawn({
            let first = first.clone();
            async move {
                first.none_left(ACKS_FIRST_WITHIN).await;
                let _ = done_tx.send(());
            }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(done.try_recv().is_err(), "one is still unanswered");
        drop(b);
        tokio::time::timeout(Duration::from_millis(200), done)
            .await
            .expect("goes on once none is left")
            .unwrap();

        // All answered, but one arrived just now: the work waits until none has for QUIET.
        let arrived = Instant::now();
        drop(first.received());
        first.none_left(ACKS_FIRST_WITHIN).await;
        assert!(arrived.elapsed() >= QUIET, "{:?}", arrived.elapsed());

        // One never answered: the work waits the bound, then goes on.
        let _stuck = first.received();
        let started = Instant::now();
        first.none_left(ACKS_FIRST_WITHIN).await;
        assert!(started.elapsed() >= ACKS_FIRST_WITHIN);
        assert!(started.elapsed() < ACKS_FIRST_WITHIN * 2);
    }
}
