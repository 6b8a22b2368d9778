%% migctl_pass: the rows of a full check's first pass over a store (a DETS
%% file above all), kept on the store's node for the check's later rounds.
%%
%% Why: a full check makes one pass over each store per round, and with the
%% keys in flight left out (migctl_buckets, {exclude_changed, Tab, Since})
%% a check of the 1.8M-session file under 1,000 ops/s made three: the
%% first round (every bucket), the round that sums the differing buckets
%% once more, and the listing of the few that still differ, 55-76 s each,
%% two thirds of the check. The later two need only a few per cent of the
%% rows, but a DETS file (or an ETS table, a Mnesia table's local copy:
%% 12-13 s a pass there) has no index by hash, so each read it whole.
%%
%% What is kept: for every row of the first pass that the pass did not
%% leave out, {Part, Id, Digest}: Part = phash2(Id, 2^32) bsr 16 (the
%% rows of a hash range are those of a few parts), Digest the row's digest
%% in the pass's mode (migctl_buckets:digest/4). About 100 bytes a row in
%% a duplicate_bag (measured: 124 bytes a row, so 224 MB for 1.8M
%% sessions), on the store's node, for the minute or two of the check; a
%% node holding both stores of the check (a DETS file and a Mnesia copy)
%% keeps both.
%%
%% Why the kept digests are still right at the later rounds: those rounds
%% leave out every key the node's change recorder has as changed since
%% Since, and Since is before the first pass began (the check's start
%% minus a margin). A row the later round reads from here is therefore of
%% a key nobody changed since before the first pass: its digest then is
%% its digest now. A key changed since is left out of the later round on
%% both sides and verified by key at the end, as without this module.
%% The recorder records every write to the Mnesia table (on each node
%% that has a copy); in phase1 every write to the DETS file or ETS table
%% is one to Mnesia too. Only changes the recorder does not see (a write to
%% the DETS file alone, behind Mnesia's back, after the first pass read it)
%% are seen as of the first pass, which is what a check that read that
%% bucket once would have seen anyway. The lookups of the listing (keys/3) read the rows' current
%% values: only which ids are in the ranges comes from here.
%%
%% Ownership: one registered process per node (migctl_pass) owns the
%% tables (public: the pass's own process fills them). A pass is found by
%% its key {Token, Store} (the check's random token, the store: kind,
%% table and, for DETS, file)
%% and its meta (digest mode, recorder table, Since): another check, or
%% the same one with other options, does not find it. At most ?MAX passes
%% are kept (the oldest goes first), each is dropped ?IDLE_MS after its
%% last use or when the check drops its token (drop/1, at its end), and the
%% process ends with the last table. A pass whose fold failed is dropped;
%% only a complete pass is found.
%%
%% Memory: a pass is kept only when it fits in a quarter of the memory the
%% node can still take (room/1): the lower of the kernel's MemAvailable and
%% what the node's cgroup (v2 memory.max, v1 memory.limit_in_bytes) still
%% allows, so that a check never pushes a service near its container's
%% limit. Without room the pass is read as before this module, its later
%% rounds read the store again (slower, nothing else changes). Where
%% neither can be read (not Linux) there is no guard.
-module(migctl_pass).

-export([start/2, complete/2, find/2, drop/1, info/0, room/1, room/2, available/0]).

-define(NAME, migctl_pass).
-define(MAX, 4).
-define(IDLE_MS, 600000).
-define(TICK_MS, 30000).
%% Bytes a kept row takes (measured: 124 in a duplicate_bag, erlmcp's
%% 32-character ids), and the share of the available memory a pass may take.
-define(ROW_BYTES, 128).
-define(SHARE, 4).

%% room(Rows) -> true | {false, Need, Available}: whether a pass of Rows
%% rows may be kept now (see Memory at the top).
room(Rows) -> room(Rows, available()).

%% room(Rows, Available): the rule, for a given Available (bytes, or
%% undefined when it cannot be read: no guard).
room(_, undefined) -> true;
room(Rows, Avail) ->
    Need = Rows * ?ROW_BYTES,
    case Need * ?SHARE =< Avail of
        true -> true;
        false -> {false, Need, Avail}
    end.

%% available() -> Bytes | undefined: what this node can still take: the
%% kernel's MemAvailable, lowered to what its cgroup's limit leaves.
available() ->
    case [A || A <- [meminfo_available(), cgroup_left()], is_integer(A)] of
        [] -> undefined;
        L -> max(0, lists:min(L))
    end.

meminfo_available() ->
    case file:read_file("/proc/meminfo") of
        {ok, B} ->
            case re:run(B, "^MemAvailable:\\s+(\\d+) kB", [multiline, {capture, all_but_first, list}]) of
                {match, [Kb]} -> list_to_integer(Kb) * 1024;
                nomatch -> undefined
            end;
        _ -> undefined
    end.

%% The cgroup's limit minus its usage (v2, then v1); undefined when there
%% is no limit ("max", or v1's huge default) or no cgroup file.
cgroup_left() ->
    Paths = case file:read_file("/proc/self/cgroup") of
                {ok, B} -> [string:split(L, ":", all) || L <- string:lexemes(binary_to_list(B), "\n")];
                _ -> []
            end,
    V2 = [P || ["0", "", P] <- Paths],
    V1 = [P || [_, Ctl, P] <- Paths, lists:member("memory", string:lexemes(Ctl, ","))],
    first_left([{"/sys/fs/cgroup" ++ P, "memory.max", "memory.current"} || P <- V2] ++
               [{"/sys/fs/cgroup", "memory.max", "memory.current"} || V2 =/= []] ++
               [{"/sys/fs/cgroup/memory" ++ P, "memory.limit_in_bytes", "memory.usage_in_bytes"} || P <- V1] ++
               [{"/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"} || V1 =/= []]).

first_left([]) -> undefined;
first_left([{Dir, Max, Cur} | More]) ->
    case {read_int(filename:join(Dir, Max)), read_int(filename:join(Dir, Cur))} of
        {L, U} when is_integer(L), is_integer(U), L < 1 bsl 60 -> L - U;
        {max, _} -> undefined;
        {L, _} when is_integer(L) -> undefined; % v1's "no limit"
        _ -> first_left(More)
    end.

read_int(F) ->
    case file:read_file(F) of
        {ok, <<"max", _/binary>>} -> max;
        {ok, B} ->
            case string:to_integer(string:trim(binary_to_list(B))) of
                {N, _} when is_integer(N) -> N;
                _ -> undefined
            end;
        _ -> undefined
    end.

%% start(Key, Meta) -> Tab: a new, empty table for the pass Key (replacing
%% one of the same key), for the caller to fill.
start(Key, Meta) -> call({start, Key, Meta}).

%% complete(Key, Info): the pass Key is whole and can be found; Info
%% (any term) is returned with it.
complete(Key, Info) -> call({complete, Key, Info}).

%% find(Key, Meta) -> {ok, Tab, Info} | none. Meta is matched with the
%% meta the pass was started with, element by element; an element `any'
%% matches anything.
find(Key, Meta) ->
    case whereis(?NAME) of
        undefined -> none;
        _ -> call({find, Key, Meta})
    end.

%% drop(Token): every pass of the check Token goes. When that was the
%% last, it returns once the owner has ended (the caller may unload this
%% module next).
drop(Token) ->
    case whereis(?NAME) of
        undefined -> ok;
        Pid ->
            Ref = erlang:monitor(process, Pid),
            ok = call({drop, Token}),
            case whereis(?NAME) of
                Pid -> erlang:demonitor(Ref, [flush]);
                _ -> receive {'DOWN', Ref, _, _, _} -> ok after 5000 -> ok end
            end,
            ok
    end.

%% info() -> [#{key, rows, bytes, complete}]: for tests and operators.
info() ->
    case whereis(?NAME) of
        undefined -> [];
        _ -> call(info)
    end.

call(Req) ->
    Pid = owner(),
    Ref = erlang:monitor(process, Pid),
    Pid ! {?NAME, self(), Ref, Req},
    receive
        {Ref, Reply} -> erlang:demonitor(Ref, [flush]), Reply;
        {'DOWN', Ref, _, _, R} -> migctl_lib:fail({pass_cache_down, migctl_lib:error_text("owner", R)})
    after 30000 ->
        erlang:demonitor(Ref, [flush]),
        migctl_lib:fail(pass_cache_timeout)
    end.

%% owner(): the registered owner, started when missing (two callers racing
%% to start it: the loser's process sees the name taken and ends).
owner() ->
    case whereis(?NAME) of
        undefined ->
            Parent = self(),
            Pid = spawn(fun() ->
                                case catch register(?NAME, self()) of
                                    true -> Parent ! {?NAME, started, self()}, loop(#{});
                                    _ -> Parent ! {?NAME, started, none}
                                end
                        end),
            receive {?NAME, started, P} when P =:= Pid; P =:= none -> ok end,
            case whereis(?NAME) of
                undefined -> owner();
                O -> O
            end;
        Pid -> Pid
    end.

%% Passes: #{Key => #{tab, meta, used (ms), complete}}. The process ends
%% with its last pass (a caller that finds it gone starts another): it
%% runs this module's code, and migctl unloads its agent modules when it
%% closes only if no process runs them.
loop(Passes) ->
    receive
        Msg -> handle(Msg, Passes)
    after ?TICK_MS ->
        next(expire(Passes))
    end.

handle({?NAME, From, Ref, Req}, Passes0) ->
    Passes = expire(Passes0),
    {Reply, Next} = request(Req, Passes),
    case map_size(Next) of
        0 ->
            %% Unregistered before the reply: a caller that comes next
            %% starts a new owner instead of writing to this one.
            unregister(?NAME),
            From ! {Ref, Reply};
        _ ->
            From ! {Ref, Reply},
            loop(Next)
    end;
handle(_, Passes) ->
    next(Passes).

next(Passes) when map_size(Passes) =:= 0 -> unregister(?NAME);
next(Passes) -> loop(Passes).

request({start, Key, Meta}, Passes0) ->
    Passes1 = remove(Key, Passes0),
    Passes = case map_size(Passes1) >= ?MAX of
                 true -> remove(oldest(Passes1), Passes1);
                 false -> Passes1
             end,
    Tab = ets:new(?NAME, [duplicate_bag, public]),
    {Tab, Passes#{Key => #{tab => Tab, meta => Meta, used => now_ms(), complete => false}}};
request({complete, Key, Info}, Passes) ->
    case Passes of
        #{Key := P} -> {ok, Passes#{Key := P#{complete := true, info => Info, used := now_ms()}}};
        #{} -> {ok, Passes}
    end;
request({find, Key, Want}, Passes) ->
    case Passes of
        #{Key := #{meta := Meta, complete := true, tab := Tab, info := Info} = P} ->
            case matches(tuple_to_list(Want), tuple_to_list(Meta)) of
                true -> {{ok, Tab, Info}, Passes#{Key := P#{used := now_ms()}}};
                false -> {none, Passes}
            end;
        #{} ->
            {none, Passes}
    end;
request({drop, Token}, Passes) ->
    {ok, lists:foldl(fun remove/2, Passes, [K || K <- maps:keys(Passes), element(1, K) =:= Token])};
request(info, Passes) ->
    {[#{key => K, rows => ets:info(T, size), bytes => ets:info(T, memory) * erlang:system_info(wordsize),
        complete => C} || {K, #{tab := T, complete := C}} <- maps:to_list(Passes)], Passes};
request(_, Passes) ->
    {{error, bad_request}, Passes}.

matches([], []) -> true;
matches([any | W], [_ | M]) -> matches(W, M);
matches([X | W], [X | M]) -> matches(W, M);
matches(_, _) -> false.

remove(Key, Passes) ->
    case maps:take(Key, Passes) of
        {#{tab := Tab}, Rest} -> _ = catch ets:delete(Tab), Rest;
        error -> Passes
    end.

oldest(Passes) ->
    {_, K} = lists:min([{U, K} || {K, #{used := U}} <- maps:to_list(Passes)]),
    K.

expire(Passes) ->
    Old = now_ms() - ?IDLE_MS,
    lists:foldl(fun remove/2, Passes, [K || {K, #{used := U}} <- maps:to_list(Passes), U < Old]).

now_ms() -> erlang:monotonic_time(millisecond).
