//! COM-port 16550A UART: vm-superio's state machine behind a [`BusDevice`].

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};

use crate::{BusDevice, EdgeIrq};

/// Interrupt trigger adapter from [`EdgeIrq`] to vm-superio's [`Trigger`].
pub struct IrqTrigger(pub Arc<dyn EdgeIrq>);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}

/// Counters and the "input space available" notification of a UART.
pub struct SerialMetrics {
    /// Bytes the guest wrote that reached the output.
    pub tx_bytes: AtomicU64,
    /// Bytes the guest wrote that the output refused (counted, never hidden).
    pub tx_lost: AtomicU64,
    /// Bytes the guest read from the receive FIFO.
    pub rx_reads: AtomicU64,
    on_input_space: Box<dyn Fn() + Send + Sync>,
}

impl SerialMetrics {
    /// `on_input_space` runs when the guest empties the receive FIFO, so that
    /// the VMM can resume reading its input source.
    pub fn new(on_input_space: Box<dyn Fn() + Send + Sync>) -> Self {
        Self {
            tx_bytes: AtomicU64::new(0),
            tx_lost: AtomicU64::new(0),
            rx_reads: AtomicU64::new(0),
            on_input_space,
        }
    }
}

impl SerialEvents for SerialMetrics {
    fn buffer_read(&self) {
        self.rx_reads.fetch_add(1, Ordering::Relaxed);
    }
    fn out_byte(&self) {
        self.tx_bytes.fetch_add(1, Ordering::Relaxed);
    }
    fn tx_lost_byte(&self) {
        self.tx_lost.fetch_add(1, Ordering::Relaxed);
    }
    fn in_buffer_empty(&self) {
        (self.on_input_space)();
    }
}

type Uart = Serial<IrqTrigger, Arc<SerialMetrics>, Box<dyn Write + Send>>;

/// A 16550A UART on the I/O bus (8 registers).
pub struct SerialDevice {
    uart: Mutex<Uart>,
    metrics: Arc<SerialMetrics>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing the guest's output to `out`.
    pub fn new(
        irq: Arc<dyn EdgeIrq>,
        metrics: Arc<SerialMetrics>,
        out: Box<dyn Write + Send>,
    ) -> Self {
        Self {
            uart: Mutex::new(Serial::with_events(IrqTrigger(irq), metrics.clone(), out)),
            metrics,
        }
    }

    /// Free space in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.lock().unwrap().fifo_capacity()
    }

    /// Queues console input for the guest; returns how many bytes were taken
    /// (at most [`Self::input_capacity`]; the caller keeps the rest).
    pub fn enqueue_input(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut uart = self.uart.lock().unwrap();
        let room = uart.fifo_capacity().min(bytes.len());
        if room == 0 {
            return Ok(0);
        }
        uart.enqueue_raw_bytes(&bytes[..room])
            .map_err(|e| io::Error::other(format!("serial input: {e:?}")))
    }

    /// The device's counters.
    pub fn metrics(&self) -> &SerialMetrics {
        &self.metrics
    }
}

impl BusDevice for SerialDevice {
    fn read(&self, _base: u64, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset > 7 {
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.lock().unwrap().read(offset as u8);
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset > 7 {
            return;
        }
        // Output errors are counted in the metrics (tx_lost); an interrupt
        // error cannot be reported to the guest either way.
        let _ = self.uart.lock().unwrap().write(offset as u8, data[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct CountIrq(AtomicUsize);
    impl EdgeIrq for CountIrq {
        fn trigger(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_input_and_backpressure() {
        let irq = Arc::new(CountIrq::default());
        let space = Arc::new(AtomicUsize::new(0));
        let s2 = space.clone();
        let metrics = Arc::new(SerialMetrics::new(Box::new(move || {
            s2.fetch_add(1, Ordering::SeqCst);
        })));
        let out = SharedBuf::default();
        let dev = SerialDevice::new(irq.clone(), metrics, Box::new(out.clone()));
        for b in b"hi\n" {
            dev.write(0x3f8, 0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert_eq!(dev.metrics().tx_bytes.load(Ordering::SeqCst), 3);

        // Enable the receive interrupt, then feed more than the FIFO holds.
        dev.write(0x3f8, 1, &[1]);
        let cap = dev.input_capacity();
        let big = vec![b'x'; cap + 10];
        assert_eq!(dev.enqueue_input(&big).unwrap(), cap);
        assert_eq!(dev.enqueue_input(b"y").unwrap(), 0);
        assert!(irq.0.load(Ordering::SeqCst) >= 1);
        let mut b = [0u8];
        for _ in 0..cap {
            dev.read(0x3f8, 0, &mut b);
            assert_eq!(b[0], b'x');
        }
        assert_eq!(
            space.load(Ordering::SeqCst),
            1,
            "guest drained the FIFO: input resumes"
        );
        // Bad sizes and offsets are ignored, not panics.
        let mut four = [0u8; 4];
        dev.read(0x3f8, 0, &mut four);
        assert_eq!(four, [0xff; 4]);
        dev.write(0x3f8, 9, &[1]);
    }

    #[test]
    fn lost_output_is_counted() {
        let metrics = Arc::new(SerialMetrics::new(Box::new(|| {})));
        let dev = SerialDevice::new(Arc::new(CountIrq::default()), metrics, Box::new(Broken));
        dev.write(0x3f8, 0, b"a");
        assert_eq!(dev.metrics().tx_lost.load(Ordering::SeqCst), 1);
    }
}
