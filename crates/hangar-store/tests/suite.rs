mod conformance;
mod dump;
mod postgres;
mod schedules;
mod sqlite;
