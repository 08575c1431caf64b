//! Where results go: tables (comfy-table, borderless like `kubectl get`) or proto3 JSON on
//! stdout. Colour only for states, only on a terminal, never with `--no-color` or `NO_COLOR`.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use comfy_table::{Cell, Color, Table, presets};

use crate::fail::Fail;
use crate::proto::{self, Proto};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    Table,
    /// One proto3 JSON document (lists as an array), proto field names.
    Json,
}

#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub format: Format,
    color: bool,
}

impl Out {
    pub fn new(format: Format, no_color: bool) -> Self {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = !no_color && !no_color_env && std::io::stdout().is_terminal();
        Self { format, color }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Writes text to stdout; a closed pipe (`| head`) is not an error.
    pub fn write(&self, text: &str) -> Result<(), Fail> {
        let mut stdout = std::io::stdout().lock();
        let written = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        }
    }

    pub fn print_json(&self, value: &serde_json::Value) -> Result<(), Fail> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Fail::Failed(format!("cannot print JSON: {e}")))?;
        self.write(&format!("{text}\n"))
    }

    /// A borderless table with this header.
    pub fn table(&self, header: &[&str]) -> Table {
        let mut table = Table::new();
        table.load_style(presets::NOTHING);
        if self.color {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        if !header.is_empty() {
            table.set_header(header.iter().map(Cell::new));
        }
        table
    }

    pub fn print_table(&self, mut table: Table) -> Result<(), Fail> {
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        let mut text = String::new();
        for line in table.lines() {
            text.push_str(line.trim_end());
            text.push('\n');
        }
        self.write(&text)
    }

    /// One message: JSON, or a `field  value` table of every field (reference ids followed by
    /// the referenced resource's name).
    pub fn print_message<T: Proto>(&self, message: &T, names: &crate::crud::Names) -> Result<(), Fail> {
        if self.json() {
            return self.print_json(&proto::to_json(message)?);
        }
        let mut table = self.table(&[]);
        for (path, value) in proto::flatten(message)? {
            let shown = match names.lookup(&path, &value) {
                Some(name) => format!("{value} ({name})"),
                None => value,
            };
            table.add_row(vec![path, shown]);
        }
        self.print_table(table)
    }

    /// A state cell, coloured when colour is on.
    pub fn state_cell(&self, state: &str) -> Cell {
        let cell = Cell::new(state);
        if !self.color {
            return cell;
        }
        match state {
            "active" | "ok" => cell.fg(Color::Green),
            "waiting" => cell.fg(Color::Yellow),
            "error" | "failed" => cell.fg(Color::Red),
            _ => cell,
        }
    }
}
