mod conformance;
mod dump;
mod postgres;
mod sqlite;
