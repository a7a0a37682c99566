mod conformance;
mod sqlite;
