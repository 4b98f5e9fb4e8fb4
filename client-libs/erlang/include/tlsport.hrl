%% Handles of the modern API (tlsport). Treat them as opaque: match them
%% whole (`{tlsport, S, Data}` with S bound), do not take them apart.

%% A connected TLS socket: its process, the daemon's socket id, and what
%% send/2 needs to write to the daemon without a detour through the
%% socket process: the channel (the daemon's port, or in attach mode the
%% process that writes to its Unix socket), the framing mode and a closed
%% flag.
-record(tlsport_socket, {pid :: pid(), id :: pos_integer(), port :: port() | pid(),
                         mode :: binary(), state :: atomics:atomics_ref()}).

%% A listening socket: the library's key for it and the TCP port.
-record(tlsport_listen, {key :: pos_integer(), port :: inet:port_number()}).
