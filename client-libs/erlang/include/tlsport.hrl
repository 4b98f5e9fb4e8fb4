%% Handles of the modern API (tlsport). Treat them as opaque: match them
%% whole (`{tlsport, S, Data}` with S bound), do not take them apart.

%% A connected TLS socket: its process and the daemon's socket id.
-record(tlsport_socket, {pid :: pid(), id :: pos_integer()}).

%% A listening socket: the library's key for it and the TCP port.
-record(tlsport_listen, {key :: pos_integer(), port :: inet:port_number()}).
