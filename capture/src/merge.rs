//! Several capture files read as one stream in timestamp order.
use crate::{CaptureError, FileReader, Frame, FrameSource, SourceStats};

/// Merges several [`FileReader`]s by frame timestamp (a k-way merge over each file's
/// next frame). Within one file, file order is kept even where timestamps go backwards.
pub struct MergedReader {
    readers: Vec<FileReader>,
    /// Whether each reader is positioned on a frame not yet handed out.
    ready: Vec<bool>,
    /// Reader whose frame was handed out last; it advances on the next call.
    last: Option<usize>,
    started: bool,
}

impl MergedReader {
    /// Merges the given readers.
    pub fn new(readers: Vec<FileReader>) -> MergedReader {
        let n = readers.len();
        MergedReader {
            readers,
            ready: vec![false; n],
            last: None,
            started: false,
        }
    }

    /// The underlying readers, e.g. for their warnings and per-file counters.
    pub fn readers_mut(&mut self) -> &mut [FileReader] {
        &mut self.readers
    }

    /// Per-file counters, in the order the files were given.
    pub fn per_file_stats(&self) -> Vec<SourceStats> {
        self.readers.iter().map(FrameSource::stats).collect()
    }
}

impl FrameSource for MergedReader {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if !self.started {
            self.started = true;
            for (i, r) in self.readers.iter_mut().enumerate() {
                self.ready[i] = r.advance()?;
            }
        } else if let Some(i) = self.last.take() {
            self.ready[i] = self.readers[i].advance()?;
        }
        let mut best: Option<(usize, u64)> = None;
        for (i, r) in self.readers.iter().enumerate() {
            if !self.ready[i] {
                continue;
            }
            let ts = r.current_ts().unwrap_or(0);
            if best.is_none_or(|(_, b)| ts < b) {
                best = Some((i, ts));
            }
        }
        let Some((i, _)) = best else {
            return Ok(None);
        };
        self.last = Some(i);
        Ok(self.readers[i].current())
    }

    fn stats(&self) -> SourceStats {
        let mut total = SourceStats::default();
        for r in &self.readers {
            total.add(&r.stats());
        }
        total
    }

    fn position(&self) -> u64 {
        self.readers.iter().map(FrameSource::position).sum()
    }
}
