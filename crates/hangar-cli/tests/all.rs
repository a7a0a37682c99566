//! System tests: real `hangar` server and worker processes, a fake model.

mod suite;
