//! Resume after a dropped socket. A technician walking between plant buildings loses
//! the connection for seconds; the conversation should not be lost with it.
//!
//! `session.created` carries a signed resume token. When a session's socket ends, its
//! resumable state (settings, history, an answer left unfinished) is parked for
//! `server.resume_window_ms`; reconnecting with the token (and a bearer token of the same
//! user) within the window takes it back under the same session id. With
//! `backends.sessions = "redis"` the state is parked in Redis, so the session can be
//! taken back by any instance sharing `server.resume_secret` (here, when Redis is down).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::history::History;
use super::protocol::{AudioFormat, ServerVad};
use crate::auth::{Claims, now_secs};
use crate::backends::redis::RedisLink;

/// A resume token outlives the window: the window runs from the drop, and a session
/// can be long. A working shift.
const TOKEN_TTL_SECS: u64 = 12 * 3600;
/// Parked states are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Everything a resumed session gets back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeState {
    pub session_id: Uuid,
    pub tenant: String,
    pub user: String,
    pub pipeline: String,
    pub input_rate: Option<u32>,
    pub output_rate: u32,
    /// Absent in state parked by a server from before Opus: PCM16.
    #[serde(default)]
    pub input_format: AudioFormat,
    #[serde(default)]
    pub output_format: AudioFormat,
    pub equipment: Option<String>,
    /// `None`: the client commits its own turns.
    pub turn_detection: Option<ServerVad>,
    pub history: History,
    /// A response that was still running when the socket dropped: reported `cancelled`.
    pub unfinished_response: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResumeClaims {
    sid: Uuid,
    tenant: String,
    sub: String,
    exp: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("the resume token is invalid or belongs to another user")]
    InvalidToken,
    #[error("the session can no longer be resumed (its resume window has passed); start a new one")]
    Expired,
}

/// Signs resume tokens and holds parked sessions.
pub struct Resumer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    window: Duration,
    parked: DashMap<Uuid, (Instant, ResumeState)>,
    swept: std::sync::Mutex<Instant>,
    shared: Option<Arc<RedisLink>>,
}

fn parked_key(session_id: Uuid) -> String {
    format!("resume:{session_id}")
}

impl Resumer {
    /// `secret` unset: a random one for this process.
    pub fn new(secret: Option<&str>, window: Duration, shared: Option<Arc<RedisLink>>) -> Self {
        let random = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let secret = secret.filter(|s| !s.is_empty()).unwrap_or(&random).as_bytes().to_vec();
        Self {
            encoding: EncodingKey::from_secret(&secret).expect("a non-empty secret"),
            decoding: DecodingKey::from_secret(&secret).expect("a non-empty secret"),
            window,
            parked: DashMap::new(),
            swept: std::sync::Mutex::new(Instant::now()),
            shared,
        }
    }

    pub fn token(&self, session_id: Uuid, claims: &Claims) -> String {
        let claims = ResumeClaims {
            sid: session_id,
            tenant: claims.tenant.clone(),
            sub: claims.sub.clone(),
            exp: now_secs().saturating_add(TOKEN_TTL_SECS),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// The session id a token resumes, if it is genuine and issued to this user.
    pub fn verify(&self, token: &str, claims: &Claims) -> Result<Uuid, ResumeError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<ResumeClaims>(token, &self.decoding, &validation)
            .map_err(|_| ResumeError::InvalidToken)?;
        let c = data.claims;
        if c.tenant != claims.tenant || c.sub != claims.sub {
            return Err(ResumeError::InvalidToken);
        }
        Ok(c.sid)
    }

    /// Keeps a closed session's state for the resume window.
    pub async fn park(&self, state: ResumeState) {
        if let Some(redis) = &self.shared
            && let Ok(json) = serde_json::to_vec(&state)
        {
            let ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX).max(1);
            let cmd = redis::cmd("SET").arg(parked_key(state.session_id)).arg(json).arg("PX").arg(ms).clone();
            if redis.run::<()>(&cmd).await.is_ok() {
                return;
            }
        }
        self.sweep();
        self.parked.insert(state.session_id, (Instant::now() + self.window, state));
    }

    /// Takes a parked session back; each can be resumed once.
    pub async fn take(&self, session_id: Uuid) -> Result<ResumeState, ResumeError> {
        if let Some(redis) = &self.shared {
            // GETDEL: two instances racing for one session, one gets it.
            let found: Option<Vec<u8>> =
                redis.run(redis::cmd("GETDEL").arg(parked_key(session_id))).await.ok().flatten();
            if let Some(state) = found.and_then(|json| serde_json::from_slice::<ResumeState>(&json).ok()) {
                return Ok(state);
            }
        }
        match self.parked.remove(&session_id) {
            Some((_, (until, state))) if Instant::now() <= until => Ok(state),
            _ => Err(ResumeError::Expired),
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        let Ok(mut swept) = self.swept.try_lock() else { return };
        if now.duration_since(*swept) < SWEEP_EVERY {
            return;
        }
        *swept = now;
        drop(swept);
        self.parked.retain(|_, (until, _)| *until >= now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn claims(tenant: &str, sub: &str) -> Claims {
        Claims { sub: sub.into(), tenant: tenant.into(), role: Role::Technician, iat: 0, exp: u64::MAX }
    }

    fn state(id: Uuid) -> ResumeState {
        ResumeState {
            session_id: id,
            tenant: "acme".into(),
            user: "tech-1".into(),
            pipeline: "field-assistant".into(),
            input_rate: Some(16_000),
            output_rate: 16_000,
            input_format: AudioFormat::Opus,
            output_format: AudioFormat::Pcm16,
            equipment: Some("RTU-40".into()),
            turn_detection: Some(ServerVad::default()),
            history: History::default(),
            unfinished_response: None,
        }
    }

    #[tokio::test]
    async fn a_token_resumes_only_its_own_users_session_once_within_the_window() {
        let r = Resumer::new(None, Duration::from_secs(30), None);
        let id = Uuid::new_v4();
        let token = r.token(id, &claims("acme", "tech-1"));
        assert_eq!(r.verify(&token, &claims("acme", "tech-1")), Ok(id));
        assert_eq!(r.verify(&token, &claims("acme", "tech-2")), Err(ResumeError::InvalidToken));
        assert_eq!(r.verify(&token, &claims("globex", "tech-1")), Err(ResumeError::InvalidToken));
        assert_eq!(r.verify("not.a.token", &claims("acme", "tech-1")), Err(ResumeError::InvalidToken));
        let other = Resumer::new(None, Duration::from_secs(30), None);
        assert_eq!(other.verify(&token, &claims("acme", "tech-1")), Err(ResumeError::InvalidToken), "another key");

        assert_eq!(r.take(id).await.err(), Some(ResumeError::Expired), "nothing parked yet");
        r.park(state(id)).await;
        assert_eq!(r.take(id).await.map(|s| s.equipment), Ok(Some("RTU-40".into())));
        assert_eq!(r.take(id).await.err(), Some(ResumeError::Expired), "resumed once only");

        let brief = Resumer::new(Some("shared-secret"), Duration::ZERO, None);
        brief.park(state(id)).await;
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(brief.take(id).await.err(), Some(ResumeError::Expired), "past the window");
    }

    #[test]
    fn the_state_round_trips_as_json() {
        let s = state(Uuid::new_v4());
        let json = serde_json::to_string(&s).unwrap();
        let back: ResumeState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.session_id, s.session_id);
        assert_eq!(back.turn_detection, s.turn_detection);
    }
}
