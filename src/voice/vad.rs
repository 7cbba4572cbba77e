//! Silero VAD, batched across sessions.
//!
//! Service threads each own an ONNX session and share one queue. Sessions send 32 ms
//! windows with their own recurrent state; a free thread takes everything queued (up to a
//! batch limit) and runs it as one batch, so a thousand talking sessions cost a handful of
//! inference calls, not a thousand, and a second thread takes the next batch while the
//! first runs. Windows below the energy gate never get here (see `endpoint`).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::models::{ModelError, ModelPaths, onnx_environment};
use crate::workers::{MIN_RETRY, PoolError};

pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per VAD window at 16 kHz (32 ms).
pub const WINDOW: usize = 512;
/// Samples of the previous window Silero v6 expects in front of each window.
pub const CONTEXT: usize = 64;
/// Recurrent state per stream: 2 layers x 128.
pub const STATE: usize = 256;
const MAX_BATCH: usize = 64;

/// One stream's recurrent state and trailing context, carried between windows.
#[derive(Clone)]
pub struct VadState {
    pub state: [f32; STATE],
    pub context: [f32; CONTEXT],
}

impl Default for VadState {
    fn default() -> Self {
        Self { state: [0.0; STATE], context: [0.0; CONTEXT] }
    }
}

/// The model itself: scores a batch of windows.
pub struct SileroVad {
    session: Session,
}

impl SileroVad {
    pub fn load(paths: &ModelPaths, threads: usize) -> Result<Self, ModelError> {
        let env = onnx_environment(paths)?;
        let file = paths.silero_vad()?;
        let load = |e: ort::Error| ModelError::load("silero-vad", e);
        let session = Session::builder(env)
            .map_err(load)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.into()))?
            .with_intra_threads(threads)
            .map_err(|e| load(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| load(e.into()))?
            .commit_from_file(&file)
            .map_err(load)?;
        Ok(Self { session })
    }

    /// Speech probability for each window; updates each stream's state in place.
    pub fn score(&mut self, windows: &[[f32; WINDOW]], states: &mut [VadState]) -> Result<Vec<f32>, ModelError> {
        let b = windows.len();
        if b == 0 || states.len() != b {
            return Err(ModelError::input("silero-vad", "windows and states must be non-empty and equal in number"));
        }
        let mut input = Vec::with_capacity(b * (CONTEXT + WINDOW));
        for (w, s) in windows.iter().zip(states.iter()) {
            input.extend_from_slice(&s.context);
            input.extend_from_slice(w);
        }
        // state is [2, B, 128]: layer-major.
        let mut state = vec![0.0f32; 2 * b * 128];
        for (i, s) in states.iter().enumerate() {
            for layer in 0..2 {
                let dst = (layer * b + i) * 128;
                state[dst..dst + 128].copy_from_slice(&s.state[layer * 128..(layer + 1) * 128]);
            }
        }
        let err = |e: ort::Error| ModelError::inference("silero-vad", e);
        let input = Tensor::from_array(([b, CONTEXT + WINDOW], input)).map_err(err)?;
        let state = Tensor::from_array(([2, b, 128], state)).map_err(err)?;
        let sr = Tensor::from_array(([1usize], vec![SAMPLE_RATE as i64])).map_err(err)?;
        let outputs = self.session.run(ort::inputs!["input" => input, "state" => state, "sr" => sr]).map_err(err)?;
        let (_, probs) = outputs["output"].try_extract_tensor::<f32>().map_err(err)?;
        let (_, new_state) = outputs["stateN"].try_extract_tensor::<f32>().map_err(err)?;
        if probs.len() < b || new_state.len() != 2 * b * 128 {
            return Err(ModelError::inference("silero-vad", "unexpected output shape"));
        }
        for (i, (w, s)) in windows.iter().zip(states.iter_mut()).enumerate() {
            for layer in 0..2 {
                let src = (layer * b + i) * 128;
                s.state[layer * 128..(layer + 1) * 128].copy_from_slice(&new_state[src..src + 128]);
            }
            s.context.copy_from_slice(&w[WINDOW - CONTEXT..]);
        }
        Ok(probs[..b].to_vec())
    }
}

struct Request {
    window: [f32; WINDOW],
    state: VadState,
    reply: tokio::sync::oneshot::Sender<Result<(f32, VadState), ModelError>>,
}

/// Handle to the batching VAD thread; cheap to clone.
#[derive(Clone)]
pub struct VadService {
    tx: SyncSender<Request>,
}

impl VadService {
    /// `services` threads (0 = one per core), each with `onnx_threads` for its model.
    pub fn spawn(
        paths: &ModelPaths,
        onnx_threads: usize,
        queue_depth: usize,
        services: usize,
    ) -> Result<Self, ModelError> {
        let services = match services {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (tx, rx) = sync_channel::<Request>(queue_depth);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..services {
            let mut vad = SileroVad::load(paths, onnx_threads)?;
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("vad-{i}"))
                .spawn(move || serve(&mut vad, &rx))
                .map_err(|e| ModelError::load("silero-vad", e))?;
        }
        tracing::debug!(services, "vad threads started");
        Ok(Self { tx })
    }

    /// Scores one window of a stream, batched with whatever else is waiting.
    pub async fn score(&self, window: [f32; WINDOW], state: VadState) -> Result<(f32, VadState), PoolError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.try_send(Request { window, state, reply }).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Overloaded { pool: "vad", retry_after: MIN_RETRY },
            TrySendError::Disconnected(_) => PoolError::Stopped("vad"),
        })?;
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "vad inference failed");
                Err(PoolError::Stopped("vad"))
            }
            Err(_) => Err(PoolError::Stopped("vad")),
        }
    }
}

/// Takes the next batch: waits for one request, then whatever else is already queued.
/// The queue is held only while taking, so another thread takes the batch after.
fn next_batch(rx: &Mutex<Receiver<Request>>, batch: &mut Vec<Request>) -> bool {
    let Ok(rx) = rx.lock() else { return false };
    let Ok(first) = rx.recv() else { return false };
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    true
}

fn serve(vad: &mut SileroVad, rx: &Mutex<Receiver<Request>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut windows = Vec::with_capacity(MAX_BATCH);
    let mut states = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while next_batch(rx, &mut batch) {
        for Request { window, state, reply } in batch.drain(..) {
            windows.push(window);
            states.push(state);
            replies.push(reply);
        }
        match vad.score(&windows, &mut states) {
            Ok(probs) => {
                for ((reply, p), s) in replies.drain(..).zip(probs).zip(states.drain(..)) {
                    let _ = reply.send(Ok((p, s)));
                }
            }
            Err(e) => {
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(ModelError::inference("silero-vad", &e)));
                }
                states.clear();
            }
        }
        windows.clear();
    }
}
