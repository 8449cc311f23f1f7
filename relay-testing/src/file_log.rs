//! The log mirrored to a file, one JSON event per line, so that a child process can relay it
//! (a child cannot read its parent's memory).

use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{
    Error, GlobalLog, GlobalLogExt, LogFilter, LogPage, MemoryStore, RecordedEvent, Wakeup,
};
use futures::StreamExt;
use tokio::task::JoinHandle;

/// Mirrors the store's log into a file at `path`, one JSON event per line in position
/// order, until the returned task is aborted.
pub fn mirror_to_file(store: &MemoryStore, path: &Path) -> JoinHandle<()> {
    let mut file = std::fs::File::create(path).expect("create the mirror file");
    let mut events = store.subscribe(0, LogFilter::all());
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let event = event.expect("the memory log never fails");
            let mut line = serde_json::to_vec(&event).expect("event encodes");
            line.push(b'\n');
            file.write_all(&line).expect("write the mirror");
        }
    })
}

/// The log as mirrored by [`mirror_to_file`]: complete lines only, read as the file grows.
#[derive(Clone, Debug)]
pub struct FileLog {
    path: PathBuf,
    /// The events read so far, and the offset of the first byte not read.
    state: Arc<Mutex<(Vec<RecordedEvent>, u64)>>,
}

impl FileLog {
    /// The log mirrored at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            state: Arc::default(),
        }
    }

    fn refresh(&self) -> Result<(), Error> {
        let mut state = self.state.lock().expect("lock");
        let mut file = std::fs::File::open(&self.path).map_err(Error::backend)?;
        file.seek(SeekFrom::Start(state.1))
            .map_err(Error::backend)?;
        let mut reader = std::io::BufReader::new(file);
        let mut line = String::new();
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(Error::backend)?;
            if read == 0 || !line.ends_with('\n') {
                return Ok(());
            }
            let event: RecordedEvent = serde_json::from_str(&line).map_err(Error::backend)?;
            state.0.push(event);
            state.1 += read as u64;
        }
    }
}

impl GlobalLog for FileLog {
    async fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        self.refresh()?;
        let state = self.state.lock().expect("lock");
        let events: Vec<RecordedEvent> = state
            .0
            .iter()
            .filter(|e| e.position > after && filter.matches(e))
            .take(limit)
            .cloned()
            .collect();
        let scanned_to = events.last().map_or(after, |e| e.position);
        Ok(LogPage { events, scanned_to })
    }

    async fn head_position(&self) -> Result<u64, Error> {
        self.refresh()?;
        Ok(self
            .state
            .lock()
            .expect("lock")
            .0
            .last()
            .map_or(0, |e| e.position))
    }

    fn wakeup(&self) -> Wakeup {
        Wakeup::polling(Duration::from_millis(20))
    }
}
